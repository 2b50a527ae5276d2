"""The broadcasts' background work in one task (`fleet-broadcasts`): delivery, clip fetches,
emergencies, the receipts sweep and clocks, as parts of a `fleet.worker.PartsWorker` that turns
every second. `nudge()` runs a turn at once (a broadcast saved, a speaker born)."""

from fleet.ingest.link import MqttLink
from fleet.settings import Settings
from fleet.worker import PartsWorker, Tick

__all__ = ["BroadcastWorker", "Tick"]


class BroadcastWorker(PartsWorker):
    def __init__(self, link: MqttLink, settings: Settings, *, tick_s: float = 1.0) -> None:
        super().__init__("broadcasts", tick_s=tick_s)
        self.link = link
        self.settings = settings
