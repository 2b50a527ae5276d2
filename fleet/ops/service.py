"""Ops monitoring's background work in one task (`fleet-ops`): the parts below run in this order
every `FLEET_OPS_TICK_S` (docs/ops.md). Each part is a `tick(now)`; a failing part is logged and
the others go on (fleet/worker.py)."""

from fleet.commands import CommandExpiry
from fleet.ingest.link import MqttLink
from fleet.ingest.stats import IngestStats
from fleet.lease import Leases
from fleet.ops.engine import AlertEngine
from fleet.ops.notify import Notifier
from fleet.ops.retention import Retention
from fleet.settings import Settings
from fleet.worker import PartsWorker, Tick


class OpsWorker(PartsWorker):
    def __init__(self, link: MqttLink, settings: Settings, stats: IngestStats) -> None:
        super().__init__("ops", tick_s=settings.ops_tick_s)
        self.link = link
        self.settings = settings
        self.stats = stats


def build(link: MqttLink, settings: Settings, stats: IngestStats, leases: Leases | None = None) -> OpsWorker:
    """With `leases` (several instances, docs/fleet.md "Several instances"): the alert rules and
    retention run only on the instance holding their lease; notifications and command expiry
    claim their rows and run everywhere."""
    worker = OpsWorker(link, settings, stats)
    alerts: Tick = AlertEngine(worker).tick
    retention: Tick = Retention(settings).tick
    if leases is not None:
        alerts, retention = leases.guard("alerts", alerts), leases.guard("retention", retention)
    # parts are added here, one line each, in the order they run:
    # (alert rules) (notifications) (command expiry) (retention)
    worker.parts.append(("alerts", alerts))
    worker.parts.append(("notify", Notifier(settings).tick))
    worker.parts.append(("commands", CommandExpiry().tick))
    worker.parts.append(("retention", retention))
    return worker
