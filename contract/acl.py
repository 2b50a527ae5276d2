"""Who may publish and subscribe where: the one definition behind every broker's rules.

Mosquitto gets it as dynamic-security roles (fleet/broker_auth/dynsec.py), the embedded broker
checks it directly (fleet/broker_auth/embedded.py).
"""

from contract.topics import ROOT, is_valid_device_id

# what a device may send, under its own subtree
DEVICE_PUBLISH = ("birth", "death", "health", "telemetry", "event", "cmd/result", "state/reported",
                  "ota/progress")
DEVICE_PUBLISH_TREES = ("child",)  # child/<child-id>/... : a Pi speaking for devices it watches
# what a device may read, in its own subtree only
DEVICE_SUBSCRIBE = ("cmd", "state/desired", "ota/offer")

FLEET_PUBLISH = ("cmd", "state/desired", "ota/offer")


def _own_suffix(device_id: str, topic: str) -> str | None:
    prefix = f"{ROOT}/d/{device_id}/"
    return topic[len(prefix):] if topic.startswith(prefix) else None


def device_may_publish(device_id: str, topic: str) -> bool:
    if not is_valid_device_id(device_id) or "+" in topic or "#" in topic:
        return False
    suffix = _own_suffix(device_id, topic)
    if suffix is None:
        return False
    return suffix in DEVICE_PUBLISH or any(suffix.startswith(tree + "/") for tree in DEVICE_PUBLISH_TREES)


def device_may_subscribe(device_id: str, topic_filter: str) -> bool:
    """Only the exact topics of its own downstream messages: no wildcards."""
    suffix = _own_suffix(device_id, topic_filter)
    return is_valid_device_id(device_id) and suffix in DEVICE_SUBSCRIBE


def _matches(topic_filter: str, topic: str) -> bool:
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


def fleet_may_publish(topic: str) -> bool:
    return any(_matches(f"{ROOT}/d/+/{suffix}", topic) for suffix in FLEET_PUBLISH)


def fleet_may_subscribe(topic_filter: str) -> bool:
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2] if topic_filter.count("/") >= 2 else ""
    return topic_filter.startswith(f"{ROOT}/d/")


def device_rules(device_id: str) -> list[tuple[str, str]]:
    """(access, topic) pairs for a device: access is publish, subscribe or receive."""
    base = f"{ROOT}/d/{device_id}/"
    rules = [("publish", base + s) for s in DEVICE_PUBLISH]
    rules += [("publish", base + tree + "/#") for tree in DEVICE_PUBLISH_TREES]
    rules += [("subscribe", base + s) for s in DEVICE_SUBSCRIBE]
    rules += [("receive", base + s) for s in DEVICE_SUBSCRIBE]
    return rules


def fleet_rules() -> list[tuple[str, str]]:
    rules = [("publish", f"{ROOT}/d/+/{s}") for s in FLEET_PUBLISH]
    rules += [("subscribe", f"{ROOT}/d/#"), ("receive", f"{ROOT}/d/#")]
    return rules
