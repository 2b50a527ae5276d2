"""The MQTT wire contract (docs/protocol.md), as pure Python.

No framework and no MQTT client in here: the fleet's ingest, the edge agent and the tests all use
these functions, so there is one definition of every topic and message.
"""

from contract.errors import ContractError
from contract.messages import (
    CONTRACT_VERSION,
    DOWN_LIMITS,
    PRESENCE_KINDS,
    UPSTREAM_MAX_BYTES,
    Upstream,
    make_command,
    make_desired,
    parse_downstream,
    parse_upstream,
)
from contract.names import COMMAND_NAME_MAX, COMMAND_NAME_PATTERN, is_command_name, is_role_name
from contract.topics import (
    DEVICE_ID_PATTERN,
    PROBE_TOPIC,
    ROOT,
    UPSTREAM_KINDS,
    child_topic,
    device_topic,
    fleet_subscription,
    is_fleet_publish,
    is_valid_device_id,
    parse_topic,
    split_topic,
)

__all__ = [
    "COMMAND_NAME_MAX",
    "COMMAND_NAME_PATTERN",
    "CONTRACT_VERSION",
    "DEVICE_ID_PATTERN",
    "DOWN_LIMITS",
    "PRESENCE_KINDS",
    "PROBE_TOPIC",
    "ROOT",
    "UPSTREAM_KINDS",
    "UPSTREAM_MAX_BYTES",
    "ContractError",
    "Upstream",
    "child_topic",
    "device_topic",
    "fleet_subscription",
    "is_command_name",
    "is_fleet_publish",
    "is_role_name",
    "is_valid_device_id",
    "make_command",
    "make_desired",
    "parse_downstream",
    "parse_topic",
    "parse_upstream",
    "split_topic",
]
