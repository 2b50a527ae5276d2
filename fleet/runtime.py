"""What the running service holds: its settings, its MQTT link, its ingest loop and counters."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet.broker_auth.accounts import FLEET_USER, BrokerAccounts, reserved_for_fleet
from fleet.ingest.link import MqttLink
from fleet.ingest.stats import IngestStats
from fleet.ingest.supervisor import Supervisor
from fleet.settings import MqttTarget, Settings

if TYPE_CHECKING:
    from fleet.broadcast.service import BroadcastWorker
    from fleet.ops.metrics import FleetMetrics
    from fleet.ops.service import OpsWorker
    from fleet.ota.rollouts import RolloutEngine
    from fleet.relay.feed import FeedHub
    from fleet.relay.service import RelayWorker


@dataclass
class Runtime:
    settings: Settings
    link: MqttLink
    stats: IngestStats
    broker_url: str  # without the password
    broker_host: str
    broker_port: int
    accounts: BrokerAccounts
    device_broker: MqttTarget  # where devices are told to connect
    supervisor: Supervisor  # keeps the ingest loop running; /healthz asks it
    rollouts: "RolloutEngine | None" = None  # the OTA rollout engine (fleet/ota/rollouts.py); None in a bare set-up
    broadcasts: "BroadcastWorker | None" = None  # delivery, receipts, clocks (fleet/broadcast/service.py)
    ops: "OpsWorker | None" = None  # alert rules, notifications, retention (fleet/ops/service.py)
    metrics: "FleetMetrics | None" = None  # the one Prometheus registry and its scrape (fleet/ops/metrics.py)
    feed: "FeedHub | None" = None  # the live feed's poller and clients (fleet/relay/feed.py)
    relay: "RelayWorker | None" = None  # the relay's route table and delivery worker (fleet/relay/service.py)

    def reserves(self, device_id: str) -> bool:
        """The fleet's own broker account and client ids: no device may be registered or enrolled as one."""
        target = self.settings.mqtt_target()
        return reserved_for_fleet(device_id, fleet_username=(target.username if target else None) or FLEET_USER,
                                  fleet_client_id=self.settings.mqtt_client_id)
