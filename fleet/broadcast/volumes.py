"""A ward's speaker volume by time of day (table WardVolume; docs/broadcasts.md, "Delivery"). Pure code.

A profile is a list of steps `{"from": "HH:MM", "volume": 0..100}`: the volume at a local time is
the one of the last step whose `from` is at or before it; before the first step of the day, the
last step's volume still holds (the profile wraps around midnight). No profile: DEFAULT_VOLUME,
the nodes' own default.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from fleet.broadcast.schedule import ScheduleError, hhmm

DEFAULT_VOLUME = 70  # the ESP32 and Pi speaker roles' default
STEPS_MAX = 48


class VolumeError(ValueError):
    """A profile that cannot be used: the message says which step and why."""


def check_steps(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The steps sorted by `from`, or VolumeError (none, too many, a bad time or volume, a time twice)."""
    if not steps:
        raise VolumeError("steps: at least one {from, volume}")
    if len(steps) > STEPS_MAX:
        raise VolumeError(f"steps: at most {STEPS_MAX}")
    out: list[tuple[int, dict[str, Any]]] = []
    seen: set[int] = set()
    for index, step in enumerate(steps):
        start, volume = step.get("from"), step.get("volume")
        try:
            minute = hhmm(start if isinstance(start, str) else "", f"steps[{index}].from")
        except ScheduleError as err:
            raise VolumeError(str(err)) from err
        if not isinstance(volume, int) or isinstance(volume, bool) or not 0 <= volume <= 100:
            raise VolumeError(f"steps[{index}].volume: a whole number from 0 to 100")
        if minute in seen:
            raise VolumeError(f"steps[{index}].from: {start} is given twice")
        seen.add(minute)
        out.append((minute, {"from": start, "volume": volume}))
    return [step for _, step in sorted(out, key=lambda pair: pair[0])]


def volume_at(steps: Sequence[Mapping[str, Any]] | None, local: datetime) -> int:
    """The volume in force at a wall-clock time (steps as check_steps returns them)."""
    if not steps:
        return DEFAULT_VOLUME
    minute = local.hour * 60 + local.minute
    found = int(steps[-1]["volume"])  # before the day's first step: the last one still holds
    for step in steps:
        if hhmm(str(step["from"]), "from") <= minute:
            found = int(step["volume"])
        else:
            break
    return found
