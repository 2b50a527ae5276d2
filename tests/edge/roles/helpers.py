"""Helpers for the roles' end-to-end tests."""

from typing import Any

from contract import parse_upstream
from tests.support.mqtt_probe import Probe

UPSTREAM = ("health", "telemetry", "event", "cmd/result", "state/reported")


def checked_upstream(probe: Probe) -> int:
    """Check every stamped upstream message seen so far the way the fleet does; their number."""
    count = 0
    for topic, payload, _ in list(probe.messages):
        if payload and topic.split("/", 4)[-1] in UPSTREAM:
            parse_upstream(topic, payload)
            count += 1
    return count


def role_telemetry(probe: Probe, role: str) -> list[dict[str, Any]]:
    return [p for p in probe.payloads("telemetry") if p.get("role") == role and "seq" in p]


def events_of(probe: Probe, event_type: str) -> list[dict[str, Any]]:
    return [p for p in probe.payloads("event") if p.get("type") == event_type]
