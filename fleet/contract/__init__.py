"""The MQTT wire contract (docs/protocol.md), as pure Python.

No framework and no MQTT client in here: the fleet's ingest, the edge agent and the tests all use
these functions, so there is one definition of every topic and message.
"""

from fleet.contract.errors import ContractError
from fleet.contract.messages import (
    CONTRACT_VERSION,
    DOWN_LIMITS,
    UPSTREAM_MAX_BYTES,
    Upstream,
    make_command,
    make_desired,
    parse_downstream,
    parse_upstream,
)
from fleet.contract.topics import (
    DEVICE_ID_PATTERN,
    ROOT,
    UPSTREAM_KINDS,
    device_topic,
    fleet_subscription,
    is_valid_device_id,
    split_topic,
)

__all__ = [
    "CONTRACT_VERSION",
    "DEVICE_ID_PATTERN",
    "DOWN_LIMITS",
    "ROOT",
    "UPSTREAM_KINDS",
    "UPSTREAM_MAX_BYTES",
    "ContractError",
    "Upstream",
    "device_topic",
    "fleet_subscription",
    "is_valid_device_id",
    "make_command",
    "make_desired",
    "parse_downstream",
    "parse_upstream",
    "split_topic",
]
