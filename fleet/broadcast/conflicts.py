"""Conflicts between broadcasts on one speaker, and who wins them. Pure code.

Two occurrences conflict on a speaker when both would play there and their play times overlap
(`[start, start + duration)`). The winner: the higher level; at the same level the lower `order`;
then the older broadcast (the lower id; one not saved yet is the newest). The loser's occurrence
does not play on those speakers (docs/broadcasts.md, "Occurrences and conflicts"). A `normal`
occurrence does not play on a speaker whose ward is in quiet hours at its start, so it conflicts
with nothing there.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleet.broadcast.models import LEVEL_RANK, Level
from fleet.broadcast.schedule import Occurrence, QuietHours

NEW = 2**31  # the id ranking a broadcast not saved yet: the newest


@dataclass(frozen=True, slots=True)
class Plan:
    """A broadcast as the conflict check sees it: who it plays to, when, for how long."""

    id: int | None  # None: not saved yet
    title: str
    level: Level
    order: int
    duration: timedelta
    speakers: frozenset[str]
    occurrences: Sequence[Occurrence]

    def rank(self) -> tuple[int, int, int]:
        """Smaller wins."""
        return (-LEVEL_RANK[self.level], self.order, NEW if self.id is None else self.id)


@dataclass(frozen=True, slots=True)
class Speaker:
    id: str
    ward: str


@dataclass(frozen=True, slots=True)
class Conflict:
    other_id: int
    other_title: str
    start: datetime  # this broadcast's occurrence (UTC)
    other_start: datetime  # the other's (UTC)
    speakers: tuple[str, ...]
    winner: str  # "this" | "other"
    reason: str  # why the winner wins: level, order, older


def plays(plan: Plan, occurrence: Occurrence, speaker: Speaker, quiet: Mapping[str, QuietHours]) -> bool:
    """Whether the occurrence plays on the speaker as far as its ward's quiet hours go."""
    if plan.level != Level.NORMAL:
        return True
    hours = quiet.get(speaker.ward)
    return hours is None or not hours.holds(occurrence.local)


def quiet_skips(plan: Plan, speakers: Mapping[str, Speaker],
                quiet: Mapping[str, QuietHours]) -> dict[datetime, list[str]]:
    """The speakers each occurrence does not play on because of quiet hours (only those with any)."""
    skips: dict[datetime, list[str]] = {}
    for occurrence in plan.occurrences:
        silent = sorted(s for s in plan.speakers if not plays(plan, occurrence, speakers[s], quiet))
        if silent:
            skips[occurrence.start] = silent
    return skips


def _why(this: Plan, other: Plan) -> str:
    if this.level != other.level:
        return "level"
    if this.order != other.order:
        return "order"
    return "older"


def find(this: Plan, others: Sequence[Plan], speakers: Mapping[str, Speaker],
         quiet: Mapping[str, QuietHours]) -> list[Conflict]:
    """Every conflict of `this` with the `others`, by this broadcast's occurrence then the other's id."""
    found: list[Conflict] = []
    for other in others:
        shared = this.speakers & other.speakers
        if not shared or other.id == this.id:
            continue
        winner = "this" if this.rank() < other.rank() else "other"
        reason = _why(this, other)
        theirs = sorted(other.occurrences)
        first = 0
        for mine in sorted(this.occurrences):
            mine_end = mine.start + this.duration
            # theirs that end before mine starts never overlap a later one of mine either
            while first < len(theirs) and theirs[first].start + other.duration <= mine.start:
                first += 1
            index = first
            while index < len(theirs) and theirs[index].start < mine_end:
                candidate = theirs[index]
                index += 1
                if candidate.start + other.duration <= mine.start:
                    continue
                on = tuple(sorted(s for s in shared if plays(this, mine, speakers[s], quiet)
                                  and plays(other, candidate, speakers[s], quiet)))
                if on:
                    assert other.id is not None
                    found.append(Conflict(other.id, other.title, mine.start, candidate.start, on, winner, reason))
    found.sort(key=lambda c: (c.start, c.other_id))
    return found
