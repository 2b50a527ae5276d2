"""The broadcast schedule, with the same semantics as the ESP32 loudspeaker node
(`firmware/app_a/roles/speaker.py`). Pure code.

Desired state `speaker`:
    {"volume": 70, "tz_min": 420,
     "schedule": [{"id": "b1", "clip": "news", "at": unix_ms},                       one-off
                  {"id": "b2", "clip": "anthem", "daily": "06:30", "days": [0, 1, 2, 3, 4]},
                  {"id": "b3", "clip": "siren", "at": unix_ms, "emergency": true}],
     "clips": [{"name": "news", "url": "http://...", "sha256": "...", "bytes": n}]}

`days` are 0 = Monday … 6 = Sunday, local time (`tz_min` east of UTC). A broadcast whose latest
occurrence has not been handled starts if it is less than `GRACE_MS` late (a reboot, a clock set
late), is reported failed "missed" if it is up to `MISSED_MS` late, and is skipped beyond that.
`"priority": "emergency"` is accepted as the same as `"emergency": true`; an optional `volume`
(0..100) overrides the document's for that broadcast.
"""

from collections.abc import Mapping
from typing import Any

GRACE_MS = 120_000
MISSED_MS = 3_600_000
MAX_SCHEDULE = 32
MAX_CLIPS = 32


class ScheduleError(ValueError):
    pass


def hhmm(text: object) -> int | None:
    """'06:30' -> minutes since midnight, else None."""
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":":
        return None
    try:
        h, m = int(text[:2]), int(text[3:])
    except ValueError:
        return None
    return h * 60 + m if 0 <= h < 24 and 0 <= m < 60 else None


def is_emergency(broadcast: Mapping[str, Any]) -> bool:
    return broadcast.get("emergency") is True or broadcast.get("priority") == "emergency"


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check(part: object) -> None:
    """ScheduleError naming the first problem of a desired `speaker` object."""
    if not isinstance(part, dict):
        raise ScheduleError("must be an object")
    schedule = part.get("schedule", [])
    if not isinstance(schedule, list) or len(schedule) > MAX_SCHEDULE:
        raise ScheduleError(f"schedule: a list of at most {MAX_SCHEDULE}")
    ids = set()
    for b in schedule:
        if not isinstance(b, dict) or not isinstance(b.get("id"), str) or not isinstance(b.get("clip"), str):
            raise ScheduleError("a broadcast needs id and clip")
        if not 0 < len(b["id"]) <= 64 or b["id"] in ids:
            raise ScheduleError(f"broadcast id {b['id'][:64]!r}: 1..64 characters, unique")
        ids.add(b["id"])
        if not _int(b.get("at")) and hhmm(b.get("daily")) is None:
            raise ScheduleError(f"broadcast {b['id']}: needs at (Unix ms) or daily (HH:MM)")
        days = b.get("days", [])
        if not isinstance(days, list) or not all(_int(d) and 0 <= d <= 6 for d in days):
            raise ScheduleError(f"broadcast {b['id']}: days are 0 (Monday) .. 6")
        if "volume" in b and not (_int(b["volume"]) and 0 <= b["volume"] <= 100):
            raise ScheduleError(f"broadcast {b['id']}: volume 0..100")
    volume = part.get("volume", 70)
    if not _int(volume) or not 0 <= volume <= 100:
        raise ScheduleError("volume: 0..100")
    tz = part.get("tz_min", 0)
    if not _int(tz) or not -720 <= tz <= 840:
        raise ScheduleError("tz_min: -720..840")
    clips = part.get("clips", [])
    if not isinstance(clips, list) or len(clips) > MAX_CLIPS:
        raise ScheduleError(f"clips: a list of at most {MAX_CLIPS}")
    for c in clips:
        if not (
            isinstance(c, dict)
            and isinstance(c.get("name"), str)
            and isinstance(c.get("url"), str)
            and isinstance(c.get("sha256"), str)
            and _int(c.get("bytes"))
        ):
            raise ScheduleError("a clip needs name, url, sha256 and bytes")


def occurrence(broadcast: Mapping[str, Any], unix_ms: int, tz_min: int) -> int | None:
    """The broadcast's latest time at or before `unix_ms`, or None."""
    if "at" in broadcast:
        at: int = broadcast["at"]
        return at if at <= unix_ms else None
    minute = hhmm(broadcast["daily"])
    assert minute is not None
    local = unix_ms // 60_000 + tz_min
    day = local // 1440
    if day * 1440 + minute > local:
        day -= 1
    if "days" in broadcast and (day + 3) % 7 not in broadcast["days"]:  # 1970-01-01 was a Thursday
        return None
    return (day * 1440 + minute - tz_min) * 60_000


def next_time(schedule: list[Mapping[str, Any]], unix_ms: int, tz_min: int) -> int | None:
    """The earliest future start (for how long the scheduler may sleep); daily ones: next minute."""
    soon = [b["at"] for b in schedule if "at" in b and b["at"] > unix_ms]
    if any("daily" in b for b in schedule):
        soon.append((unix_ms // 60_000 + 1) * 60_000)
    return min(soon, default=None)
