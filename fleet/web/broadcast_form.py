"""The broadcast form of the pages: what a person fills in, to and from the API's request body.

Pure code. The form's recurrence choices (once, daily, weekly on some days, monthly, or a raw
RRULE) are only a way to write the RRULE; the API's model (BroadcastCreate) and the calendar
check everything, so a page never accepts what the API would refuse.
"""

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.broadcast.models import Broadcast

WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
RECURRENCES = ("none", "daily", "weekly", "monthly", "rrule")
_SIMPLE = {"FREQ=DAILY": "daily", "FREQ=MONTHLY": "monthly"}
_WEEKLY = re.compile(r"^FREQ=WEEKLY;BYDAY=((?:MO|TU|WE|TH|FR|SA|SU)(?:,(?:MO|TU|WE|TH|FR|SA|SU))*)$")
_LIST_SPLIT = re.compile(r"[\s,;]+")
FIELD_MAX = 4000  # characters of one text field kept from a form (the API bounds each field further)
LIST_MAX = 400  # values of one multi-valued field kept from a form


@dataclass(slots=True)
class BroadcastForm:
    """The form's fields as strings, as the person typed or picked them."""

    title: str = ""
    clip_id: str = ""
    level: str = "normal"
    wards: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    start: str = ""  # YYYY-MM-DDTHH:MM (the browser's datetime-local), wall clock of the fleet's zone
    recurrence: str = "none"
    days: list[str] = field(default_factory=list)  # MO..SU, for weekly
    rrule: str = ""  # the raw rule, for recurrence "rrule"
    until: str = ""
    count: str = ""
    exceptions: str = ""  # dates separated by spaces, commas or lines
    order: str = "100"
    version: str = ""  # the version being edited

    @classmethod
    def parse(cls, form: Mapping[str, Sequence[str]]) -> "BroadcastForm":
        def one(name: str, default: str = "") -> str:
            values = form.get(name) or [default]
            return values[0].strip()[:FIELD_MAX]

        def many(name: str) -> list[str]:
            values = [v.strip()[:FIELD_MAX] for v in (form.get(name) or [])[:LIST_MAX]]
            return [v for v in values if v]

        recurrence = one("recurrence", "none")
        return cls(title=one("title"), clip_id=one("clip_id"), level=one("level", "normal"), wards=many("wards"),
                   tags=split_list(" ".join(many("tags"))), devices=many("devices"), start=one("start"),
                   recurrence=recurrence if recurrence in RECURRENCES else "none",
                   days=[d for d in WEEKDAYS if d in many("days")], rrule=one("rrule"), until=one("until"),
                   count=one("count"), exceptions=one("exceptions"), order=one("order", "100"),
                   version=one("version"))

    @classmethod
    def of(cls, broadcast: Broadcast) -> "BroadcastForm":
        """A stored broadcast as the edit form shows it."""
        recurrence, days, raw = recurrence_of(broadcast.rrule)
        targets = broadcast.targets
        return cls(title=broadcast.title, clip_id=str(broadcast.clip_id),  # type: ignore[attr-defined]
                   level=broadcast.level.value, wards=list(targets.get("wards", [])),
                   tags=list(targets.get("tags", [])), devices=list(targets.get("devices", [])),
                   start=broadcast.start_local[:16], recurrence=recurrence, days=days, rrule=raw,
                   until=broadcast.until or "", count="" if broadcast.count is None else str(broadcast.count),
                   exceptions=" ".join(broadcast.exceptions), order=str(broadcast.order),
                   version=str(broadcast.version))

    def rule(self) -> str:
        """The RRULE value the recurrence choice writes (empty: once)."""
        if self.recurrence == "daily":
            return "FREQ=DAILY"
        if self.recurrence == "weekly":
            return "FREQ=WEEKLY;BYDAY=" + ",".join(self.days or ["MO"])
        if self.recurrence == "monthly":
            return "FREQ=MONTHLY"
        if self.recurrence == "rrule":
            return self.rrule
        return ""

    def body(self) -> dict[str, Any]:
        """The API's request body (BroadcastCreate / BroadcastUpdate without dry_run and confirm):
        the model validates it, as it validates a JSON request."""
        recurring = self.recurrence != "none"
        out: dict[str, Any] = {
            "title": self.title, "clip_id": self.clip_id or None, "level": self.level,
            "targets": {"wards": self.wards, "tags": self.tags, "devices": self.devices},
            "start": self.start or None, "rrule": self.rule(),
            "until": (self.until or None) if recurring else None,
            "count": (self.count or None) if recurring else None,
            "exceptions": split_list(self.exceptions), "order": self.order or 100}
        if self.version:
            out["version"] = self.version
        return out


    def fingerprint(self) -> str:
        """What a review was of: the save goes through only with the same values."""
        canonical = json.dumps(self.body(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def split_list(text: str) -> list[str]:
    return [part for part in _LIST_SPLIT.split(text.strip()) if part][:LIST_MAX]


def recurrence_of(rrule: str) -> tuple[str, list[str], str]:
    """(recurrence choice, weekdays, raw rule) for a stored rule: the simple choices when it is one."""
    if not rrule:
        return "none", [], ""
    if rrule in _SIMPLE:
        return _SIMPLE[rrule], [], ""
    weekly = _WEEKLY.match(rrule)
    if weekly:
        picked = set(weekly.group(1).split(","))
        return "weekly", [d for d in WEEKDAYS if d in picked], ""
    return "rrule", [], rrule
