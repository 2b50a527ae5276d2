"""Which events go where (docs/relay.md, "Routes"): a route's filter matched against an event, and
the table of enabled routes the ingest matches every event against, held in memory.

The table is loaded at start, reloaded at once when this process changes a route or an endpoint
(`RouteTable.reload`, called by `RelayWorker.routes_changed`) and every `reload_s` by the relay
worker, for changes another instance made. The ingest reads it without a query.
"""

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.relay.message import SEVERITY_RANK
from fleet.relay.models import RelayRoute


@dataclass(frozen=True, slots=True)
class Rule:
    """One enabled route's filter; each set is "any of", an empty one no condition."""

    endpoint_id: int
    types: frozenset[str] = frozenset()
    phases: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    wards: frozenset[str] = frozenset()
    device_kinds: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    min_severity: str | None = None

    @classmethod
    def of(cls, route: RelayRoute) -> "Rule":
        def names(value: Any) -> frozenset[str]:
            return frozenset(v for v in value if isinstance(v, str)) if isinstance(value, list) else frozenset()
        return cls(endpoint_id=route.endpoint_id,  # type: ignore[attr-defined]
                   types=names(route.types), phases=names(route.phases), categories=names(route.categories),
                   wards=names(route.wards), device_kinds=names(route.device_kinds), tags=names(route.tags),
                   devices=names(route.devices), min_severity=route.min_severity)


@dataclass(frozen=True, slots=True)
class Subject:
    """What a route looks at: the event's type, phase, category and severity, and its device."""

    type: str
    phase: str
    category: str
    severity: str
    device: str
    ward: str
    kind: str
    tags: frozenset[str]


def matches(rule: Rule, subject: Subject) -> bool:
    if rule.types and subject.type not in rule.types:
        return False
    if rule.phases and subject.phase not in rule.phases:
        return False
    if rule.categories and subject.category not in rule.categories:
        return False
    if rule.wards and subject.ward not in rule.wards:
        return False
    if rule.device_kinds and subject.kind not in rule.device_kinds:
        return False
    if rule.tags and not (rule.tags & subject.tags):
        return False
    if rule.devices and subject.device not in rule.devices:
        return False
    if rule.min_severity is not None:
        wanted = SEVERITY_RANK.get(rule.min_severity, len(SEVERITY_RANK))
        if SEVERITY_RANK.get(subject.severity, len(SEVERITY_RANK)) > wanted:
            return False
    return True


def endpoints_for(rules: Iterable[Rule], subject: Subject) -> set[int]:
    """The endpoints an event goes to: once each, however many of its routes match."""
    return {rule.endpoint_id for rule in rules if matches(rule, subject)}


def tags_of(value: Any) -> frozenset[str]:
    return frozenset(t for t in value if isinstance(t, str)) if isinstance(value, list) else frozenset()


class RouteTable:
    def __init__(self, reload_s: float) -> None:
        self.reload_s = reload_s
        self.rules: tuple[Rule, ...] = ()
        self.loaded_at: float | None = None  # monotonic

    async def reload(self) -> None:
        routes = await RelayRoute.filter(enabled=True).order_by("id")
        self.rules = tuple(Rule.of(r) for r in routes)
        self.loaded_at = time.monotonic()

    def stale(self) -> bool:
        return self.loaded_at is None or time.monotonic() - self.loaded_at >= self.reload_s

    def endpoints_for(self, subject: Subject) -> set[int]:
        return endpoints_for(self.rules, subject) if self.rules else set()

    def describe(self) -> Mapping[str, Any]:
        return {"routes": len(self.rules), "endpoints": len({r.endpoint_id for r in self.rules})}
