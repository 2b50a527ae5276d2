"""When a broadcast plays: RFC 5545 recurrence (python-dateutil's rrule) on the city's wall clock,
exception dates, an end date or a count, and quiet hours. Pure code: no database, no framework.

Occurrences are generated on local wall-clock times and placed in the zone afterwards, so a weekly
06:30 stays 06:30 across a daylight-saving change. A local time that does not exist (the skipped
spring hour) is placed by zoneinfo's fold=0 rule: the same distance after the gap (02:30 → 03:30 in
Europe/Berlin); a time that exists twice (autumn) is its first instance (docs/broadcasts.md).
"""

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dateutil import rrule as recurrence

RRULE_MAX = 500
COUNT_MAX = 10_000
EXCEPTIONS_MAX = 366
_RRULE_TEXT = re.compile(r"^[A-Z0-9=;,+-]+$")
_REFUSED_PARTS = {"UNTIL": "use the 'until' field", "COUNT": "use the 'count' field",
                  "DTSTART": "use the 'start' field"}
_REFUSED_FREQ = {"SECONDLY", "MINUTELY"}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class ScheduleError(ValueError):
    """A broadcast's timing that cannot be used: the message says which part and why."""


def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def check_rrule(text: str) -> str:
    """The RRULE value, upper-cased, or ScheduleError. Empty: a one-off broadcast."""
    rule = text.strip().upper().removeprefix("RRULE:")
    if not rule:
        return ""
    if len(rule) > RRULE_MAX or not _RRULE_TEXT.match(rule):
        raise ScheduleError(f"rrule: an RFC 5545 RRULE value of at most {RRULE_MAX} characters "
                            "(e.g. FREQ=WEEKLY;BYDAY=MO,WE,FR)")
    parts = dict(part.partition("=")[::2] for part in rule.split(";") if part)
    for name, hint in _REFUSED_PARTS.items():
        if name in parts:
            raise ScheduleError(f"rrule: no {name} in the rule; {hint}")
    if "FREQ" not in parts:
        raise ScheduleError("rrule: FREQ is missing (DAILY, WEEKLY, MONTHLY, YEARLY or HOURLY)")
    if parts["FREQ"] in _REFUSED_FREQ:
        raise ScheduleError("rrule: FREQ=SECONDLY and MINUTELY are refused (a speaker takes 32 entries)")
    try:
        recurrence.rrulestr(f"RRULE:{rule}", dtstart=datetime(2026, 1, 1))
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise ScheduleError(f"rrule: not a valid recurrence rule ({str(err)[:120]})") from err
    return rule


def local_start(value: datetime, tz: ZoneInfo) -> datetime:
    """The naive wall-clock time in `tz` (to the second): a time with an offset is converted first."""
    if value.tzinfo is not None:
        value = value.astimezone(tz).replace(tzinfo=None)
    return value.replace(microsecond=0)


def instant(local: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time in `tz` (fold=0: see the module's docstring)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Timing:
    """A broadcast's timing: the first occurrence's wall-clock time and how it recurs."""

    start: datetime  # naive, wall clock in tz
    tz: ZoneInfo
    rrule: str = ""  # checked (check_rrule); empty: once
    until: date | None = None  # last local date, inclusive
    count: int | None = None  # occurrences generated (before exceptions)
    exceptions: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None:
            raise ScheduleError("start: a wall-clock time (naive) in the timing's zone")
        if self.count is not None and not 1 <= self.count <= COUNT_MAX:
            raise ScheduleError(f"count: 1 to {COUNT_MAX}")
        if len(self.exceptions) > EXCEPTIONS_MAX:
            raise ScheduleError(f"exceptions: at most {EXCEPTIONS_MAX} dates")
        if not self.rrule and (self.until is not None or self.count is not None):
            raise ScheduleError("until and count are for recurring broadcasts (give an rrule)")
        if self.until is not None and self.until < self.start.date():
            raise ScheduleError("until: before the start")

    def _rule(self) -> recurrence.rrule | None:
        if not self.rrule:
            return None
        rule = recurrence.rrulestr(f"RRULE:{self.rrule}", dtstart=self.start)
        assert isinstance(rule, recurrence.rrule)
        if self.until is not None:
            rule = rule.replace(until=datetime.combine(self.until, time(23, 59, 59)))
        if self.count is not None:
            rule = rule.replace(count=self.count)
        return rule

    def _locals_from(self, local_from: datetime) -> Iterator[datetime]:
        rule = self._rule()
        if rule is None:
            if self.start >= local_from:
                yield self.start
            return
        yield from rule.xafter(local_from, inc=True)

    def occurrences(self, after: datetime, before: datetime, limit: int) -> list["Occurrence"]:
        """At most `limit` occurrences with `after <= start < before` (aware datetimes), in order."""
        found: list[Occurrence] = []
        if limit <= 0 or before <= after:
            return found
        # generated on the wall clock: begin a day early (an offset is less than a day) and filter by the instant
        local_from = after.astimezone(self.tz).replace(tzinfo=None) - timedelta(days=1)
        local_to = before.astimezone(self.tz).replace(tzinfo=None) + timedelta(days=1)
        for local in self._locals_from(local_from):
            if local >= local_to:
                break
            if local.date() in self.exceptions:
                continue
            start = instant(local, self.tz)
            if after <= start < before:
                found.append(Occurrence(start, local))
                if len(found) >= limit:
                    break
        return found

    def next(self, now: datetime, limit: int, horizon: timedelta = timedelta(days=3660)) -> list["Occurrence"]:
        return self.occurrences(now, now + horizon, limit)


@dataclass(frozen=True, slots=True, order=True)
class Occurrence:
    start: datetime  # UTC
    local: datetime  # naive wall clock in the timing's zone


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A ward's quiet hours on the wall clock; `end` before `start`: they cross midnight."""

    start_min: int
    end_min: int

    @classmethod
    def parse(cls, start: str, end: str) -> "QuietHours":
        return cls(hhmm(start, "start"), hhmm(end, "end"))

    def holds(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        if self.start_min <= self.end_min:
            return self.start_min <= minute < self.end_min
        return minute >= self.start_min or minute < self.end_min


def hhmm(text: str, what: str) -> int:
    match = _HHMM.match(text)
    if match is None:
        raise ScheduleError(f"{what}: HH:MM, 00:00 to 23:59")
    return int(match.group(1)) * 60 + int(match.group(2))


def parse_dates(texts: Collection[str], what: str) -> frozenset[date]:
    out = set()
    for text in texts:
        try:
            out.add(date.fromisoformat(text))
        except (ValueError, TypeError) as err:
            raise ScheduleError(f"{what}: dates as YYYY-MM-DD") from err
    return frozenset(out)
