"""What the running service holds: its settings, its MQTT link, its ingest loop and counters."""

from dataclasses import dataclass

from fleet.broker_auth.accounts import BrokerAccounts
from fleet.ingest.link import MqttLink
from fleet.ingest.stats import IngestStats
from fleet.ingest.supervisor import Supervisor
from fleet.settings import MqttTarget, Settings


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
