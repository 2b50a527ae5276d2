"""Ops monitoring's background work in one task (`fleet-ops`): the parts below run in this order
every `FLEET_OPS_TICK_S` (docs/ops.md). Each part is a `tick(now)`; a failing part is logged and
the others go on (fleet/worker.py)."""

from fleet.ingest.link import MqttLink
from fleet.ingest.stats import IngestStats
from fleet.ops.engine import AlertEngine
from fleet.ops.notify import Notifier
from fleet.ops.retention import Retention
from fleet.settings import Settings
from fleet.worker import PartsWorker


class OpsWorker(PartsWorker):
    def __init__(self, link: MqttLink, settings: Settings, stats: IngestStats) -> None:
        super().__init__("ops", tick_s=settings.ops_tick_s)
        self.link = link
        self.settings = settings
        self.stats = stats


def build(link: MqttLink, settings: Settings, stats: IngestStats) -> OpsWorker:
    worker = OpsWorker(link, settings, stats)
    # parts are added here, one line each, in the order they run:
    # (alert rules) (notifications) (retention)
    worker.parts.append(("alerts", AlertEngine(worker).tick))
    worker.parts.append(("notify", Notifier(settings).tick))
    worker.parts.append(("retention", Retention(settings).tick))
    return worker
