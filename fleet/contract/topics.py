"""The topic tree: `ioc/v1/d/{device_id}/{kind}`."""

import re

from fleet.contract.errors import ContractError

ROOT = "ioc/v1"
DEVICE_ID_PATTERN = r"[a-z0-9][a-z0-9-]{1,62}"
MAX_TOPIC_BYTES = 200

# Message kinds a device sends, keyed by the topic suffix under its subtree.
UPSTREAM_KINDS: dict[str, str] = {
    "birth": "birth",
    "death": "death",
    "health": "health",
    "telemetry": "telemetry",
    "event": "event",
    "cmd/result": "cmd_result",
    "state/reported": "state_reported",
}
DOWNSTREAM_KINDS: dict[str, str] = {
    "cmd": "cmd",
    "state/desired": "state_desired",
}

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_PREFIX = ROOT + "/d/"


def is_valid_device_id(device_id: str) -> bool:
    return _DEVICE_ID.fullmatch(device_id) is not None


def device_topic(device_id: str, suffix: str) -> str:
    """The topic `suffix` (e.g. `health`, `cmd/result`) in a device's own subtree."""
    if not is_valid_device_id(device_id):
        raise ContractError("bad_topic", f"device id {device_id!r} does not match {DEVICE_ID_PATTERN}")
    if suffix not in UPSTREAM_KINDS and suffix not in DOWNSTREAM_KINDS:
        raise ContractError("bad_topic", f"no message kind {suffix!r} in the contract")
    return f"{_PREFIX}{device_id}/{suffix}"


def fleet_subscription() -> str:
    """What the fleet subscribes to: everything devices send."""
    return _PREFIX + "+/#"


def split_topic(topic: str, *, upstream: bool = True) -> tuple[str, str]:
    """(device id, message kind) of a topic, or ContractError('bad_topic')."""
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise ContractError("bad_topic", f"topic longer than {MAX_TOPIC_BYTES} bytes")
    if not topic.startswith(_PREFIX):
        raise ContractError("bad_topic", f"topic {topic!r} is not under {_PREFIX}")
    device_id, sep, suffix = topic[len(_PREFIX) :].partition("/")
    if not sep or not is_valid_device_id(device_id):
        raise ContractError("bad_topic", f"topic {topic!r} has no valid device id")
    kinds = UPSTREAM_KINDS if upstream else DOWNSTREAM_KINDS
    kind = kinds.get(suffix)
    if kind is None:
        direction = "upstream" if upstream else "downstream"
        raise ContractError("bad_topic", f"{suffix!r} is not an {direction} message kind")
    return device_id, kind
