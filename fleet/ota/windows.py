"""Maintenance windows: when a rollout may offer an update to a class of devices (docs/ota.md).

Pure: no framework, no database. A rollout's `windows` maps a device class to a window:

- a class is a role name (`light`, `camera`, …), a device kind (`pi`, `esp32`), or `*` (every
  device that no other key names);
- a window is `always`, a list of daily ranges when offers may go out
  (`08:00-17:00` or `06:00-07:00,20:00-22:00`), or `not` and the ranges when they may not
  (`not 07:00-09:00,16:30-19:00`). A range is `HH:MM-HH:MM`, its start included and its end
  excluded; `24:00` may end a range; a range whose end is before its start runs over midnight
  (`22:00-05:00`). Times are the rollout's `timezone` (an IANA name, default the city's).

A device is offered only while every window that applies to it is open: those of its kind and
of each of its roles, or `*` when none of them has one. Which keys apply is fixed when the
rollout is made (`applicable`); whether they are open is asked at each tick (`open_now`).
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"  # Đồng Xoài
ANY_CLASS = "*"
MAX_WINDOWS = 16  # classes with a window in one rollout
MAX_RANGES = 8  # ranges in one window
MAX_WINDOW_TEXT = 120
KINDS = ("pi", "esp32")
_CLASS = re.compile(r"[a-z][a-z0-9_]{0,31}")  # a role name (docs/protocol.md), or a kind
_RANGE = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")
DAY_MIN = 24 * 60


class WindowError(ValueError):
    """A window or a time zone that cannot be understood; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Window:
    """Daily ranges in minutes [start, end) (end may wrap past midnight); `inverted`: the ranges
    are when offers may NOT go out."""

    ranges: tuple[tuple[int, int], ...]
    inverted: bool = False

    def allows(self, minute_of_day: int) -> bool:
        inside = any(_inside(start, end, minute_of_day) for start, end in self.ranges)
        return inside != self.inverted


def _inside(start: int, end: int, minute: int) -> bool:
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end  # over midnight


def _minutes(hours: str, minutes: str, what: str) -> int:
    value = int(hours) * 60 + int(minutes)
    if value > DAY_MIN:
        raise WindowError(f"{what}: {hours}:{minutes} is not a time of day (00:00 to 24:00)")
    return value


def parse_window(text: str, what: str = "window") -> Window:
    """`always`, `HH:MM-HH:MM[,…]` or `not HH:MM-HH:MM[,…]`; WindowError saying why otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise WindowError(f"{what}: expected 'always', 'HH:MM-HH:MM[,HH:MM-HH:MM…]' or 'not HH:MM-HH:MM[,…]'")
    if len(text) > MAX_WINDOW_TEXT:
        raise WindowError(f"{what}: longer than {MAX_WINDOW_TEXT} characters")
    body = text.strip()
    if body == "always":
        return Window(ranges=(), inverted=True)
    inverted = body.startswith("not ")
    if inverted:
        body = body.removeprefix("not ").strip()
    parts = [p.strip() for p in body.split(",")]
    if len(parts) > MAX_RANGES:
        raise WindowError(f"{what}: more than {MAX_RANGES} ranges")
    ranges = []
    for part in parts:
        match = _RANGE.fullmatch(part)
        if match is None:
            raise WindowError(f"{what}: a range is HH:MM-HH:MM (24-hour clock, e.g. 08:00-17:00), "
                              f"ranges separated by commas")
        start = _minutes(match[1], match[2], what)
        end = _minutes(match[3], match[4], what)
        if start == DAY_MIN:
            raise WindowError(f"{what}: a range cannot start at 24:00")
        if start == end:
            raise WindowError(f"{what}: a range from a time to the same time is empty")
        ranges.append((start, end))
    return Window(ranges=tuple(ranges), inverted=inverted)


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise WindowError(f"timezone: no time zone named {name[:64]!r} (an IANA name such as "
                          f"{DEFAULT_TIMEZONE})") from err


def parse_windows(windows: Mapping[str, str]) -> dict[str, Window]:
    """Every class's window, checked; WindowError on the first bad one."""
    if len(windows) > MAX_WINDOWS:
        raise WindowError(f"windows: at most {MAX_WINDOWS} device classes")
    parsed = {}
    for key, text in windows.items():
        if key != ANY_CLASS and _CLASS.fullmatch(key) is None:
            raise WindowError("windows: a device class is a role name or a kind ([a-z][a-z0-9_]{0,31}) or '*'")
        parsed[key] = parse_window(text, f"window of {key!r}")
    return parsed


def applicable(windows: Mapping[str, object], kind: str | None, roles: Iterable[str]) -> str:
    """The window keys that apply to a device, as one stored text (sorted, comma-separated; ''
    for none): its kind's and its roles', or '*' when none of those has a window."""
    keys = {k for k in (kind, *roles) if k is not None and k in windows}
    if not keys and ANY_CLASS in windows:
        keys = {ANY_CLASS}
    return ",".join(sorted(keys))


def open_now(windows: Mapping[str, Window], keys: str, now: datetime, zone: ZoneInfo) -> bool:
    """Whether every window named in `keys` (as `applicable` wrote them) is open at `now`."""
    if not keys:
        return True
    local = now.astimezone(zone)
    minute = local.hour * 60 + local.minute
    return all(windows[k].allows(minute) for k in keys.split(",") if k in windows)
