"""The topic tree: `ioc/v1/d/{device_id}/{kind}`."""

import re
from typing import NamedTuple

from contract.errors import ContractError

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
    "ota/progress": "ota_progress",
}
# child/{child_id}/{suffix}: a Pi speaking for a device it watches; child ids follow device ids
CHILD_KINDS: dict[str, str] = {"birth": "child_birth", "death": "child_death", "health": "child_health"}
DOWNSTREAM_KINDS: dict[str, str] = {
    "cmd": "cmd",
    "state/desired": "state_desired",
    "ota/offer": "ota_offer",
}

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_PREFIX = ROOT + "/d/"

# The fleet's own heartbeat through the broker (fleet/ingest/link.py). `_fleet` can never be a
# device id, so no device can read or write it; it lies inside what the fleet may publish
# (`+/cmd`) and inside its subscription, so a probe coming back proves the subscription delivers.
PROBE_TOPIC = _PREFIX + "_fleet/cmd"


class TopicParts(NamedTuple):
    device_id: str
    kind: str
    suffix: str  # what follows the device id: `health`, `cmd/result`, `child/cam-1/health`


def is_valid_device_id(device_id: str) -> bool:
    return _DEVICE_ID.fullmatch(device_id) is not None


def device_topic(device_id: str, suffix: str) -> str:
    """The topic `suffix` (e.g. `health`, `cmd/result`) in a device's own subtree."""
    if not is_valid_device_id(device_id):
        raise ContractError("bad_topic", f"device id {device_id!r} does not match {DEVICE_ID_PATTERN}")
    if suffix not in UPSTREAM_KINDS and suffix not in DOWNSTREAM_KINDS:
        raise ContractError("bad_topic", f"no message kind {suffix!r} in the contract")
    return f"{_PREFIX}{device_id}/{suffix}"


def child_topic(device_id: str, child_id: str, suffix: str) -> str:
    """`child/{child_id}/{suffix}` in a device's subtree."""
    if not (is_valid_device_id(device_id) and is_valid_device_id(child_id)) or suffix not in CHILD_KINDS:
        raise ContractError("bad_topic", f"no child topic {device_id!r}/{child_id!r}/{suffix!r} in the contract")
    return f"{_PREFIX}{device_id}/child/{child_id}/{suffix}"


def fleet_subscription() -> str:
    """What the fleet subscribes to: everything devices send."""
    return _PREFIX + "+/#"


def is_fleet_publish(topic: str) -> bool:
    """A topic the fleet publishes to devices (it sees its own publishes on its subscription)."""
    device_id, sep, suffix = topic.removeprefix(_PREFIX).partition("/")
    return topic.startswith(_PREFIX) and bool(sep) and suffix in DOWNSTREAM_KINDS and is_valid_device_id(device_id)


def parse_topic(topic: str) -> TopicParts:
    """Device id, kind and suffix of an upstream topic, or ContractError('bad_topic').

    The reasons never repeat the topic: the caller has it, and it is a device's input.
    """
    if len(topic.encode(errors="replace")) > MAX_TOPIC_BYTES:
        raise ContractError("bad_topic", f"topic longer than {MAX_TOPIC_BYTES} bytes")
    if not topic.startswith(_PREFIX):
        raise ContractError("bad_topic", f"topic is not under {_PREFIX}")
    device_id, sep, suffix = topic[len(_PREFIX) :].partition("/")
    if not sep or not is_valid_device_id(device_id):
        raise ContractError("bad_topic", "topic has no valid device id")
    kind = UPSTREAM_KINDS.get(suffix)
    if kind is None and suffix.startswith("child/"):
        child_id, _, child_suffix = suffix.removeprefix("child/").partition("/")
        if not is_valid_device_id(child_id):
            raise ContractError("bad_topic", "child topic has no valid child id")
        kind = CHILD_KINDS.get(child_suffix)
    if kind is None:
        raise ContractError("bad_topic", "not an upstream message kind")
    return TopicParts(device_id, kind, suffix)


def split_topic(topic: str, *, upstream: bool = True) -> tuple[str, str]:
    """(device id, message kind) of a topic, or ContractError('bad_topic')."""
    if upstream:
        parts = parse_topic(topic)
        return parts.device_id, parts.kind
    if len(topic.encode(errors="replace")) > MAX_TOPIC_BYTES or not topic.startswith(_PREFIX):
        raise ContractError("bad_topic", f"topic is not under {_PREFIX}")
    device_id, sep, suffix = topic[len(_PREFIX) :].partition("/")
    if not sep or not is_valid_device_id(device_id) or suffix not in DOWNSTREAM_KINDS:
        raise ContractError("bad_topic", "not a downstream message kind")
    return device_id, DOWNSTREAM_KINDS[suffix]
