"""Dedupe and gap detection for one (device, ses) stream, as pure logic.

A stream is described by the highest `seq` seen and its open gaps (ranges of numbers not yet
seen below that). That is enough to tell, exactly and in bounded state, whether a message is new,
a late arrival that fills a gap, or a duplicate (docs/protocol.md, "Streams").
"""

from dataclasses import dataclass, field
from enum import StrEnum


class Verdict(StrEnum):
    NEW = "new"  # the next number, or beyond it (then a gap opened)
    LATE = "late"  # fills (part of) a gap
    DUPLICATE = "duplicate"  # seen before: drop it


@dataclass(eq=False)  # identity: a gap is a row, two rows never merge
class Gap:
    first: int
    last: int
    id: int | None = None  # the stored row, when it has one

    def __contains__(self, seq: int) -> bool:
        return self.first <= seq <= self.last


@dataclass
class StreamState:
    max_seq: int | None = None  # None: nothing seen yet in this stream
    gaps: list[Gap] = field(default_factory=list)
    # gaps touched by the last call: new ones (id None), changed ones, closed ones (first > last)
    changed: list[Gap] = field(default_factory=list)

    def accept(self, seq: int) -> Verdict:
        """Classify `seq` and update the state to include it."""
        if self.max_seq is None or seq > self.max_seq:
            self._missing_below(seq)
            self.max_seq = seq
            return Verdict.NEW
        for index, gap in enumerate(self.gaps):
            if seq in gap:
                self._fill(index, gap, seq)
                return Verdict.LATE
        return Verdict.DUPLICATE

    def start_at(self, first: int) -> None:
        """The stream's first number is `first` (its birth's `next_seq`): nothing below is missing.

        Numbers below `first` cannot belong to the stream; one that arrives anyway is dropped as
        a duplicate.
        """
        if first <= 0:
            return
        if self.max_seq is None or self.max_seq < first - 1:
            self.max_seq = first - 1
        for gap in list(self.gaps):
            if gap.last < first:  # wholly below the start: closed
                gap.first = gap.last + 1
                self.gaps.remove(gap)
            elif gap.first < first:
                gap.first = first
            else:
                continue
            if gap not in self.changed:
                self.changed.append(gap)

    def end_at(self, next_seq: int) -> None:
        """The stream's messages are numbered below `next_seq` (a later birth's `prev` says so).

        Numbers below it not seen yet are missing: a gap up to `next_seq - 1`, which late arrivals
        fill as usual. Applying the same end again changes nothing.
        """
        if next_seq <= 0 or (self.max_seq is not None and self.max_seq >= next_seq - 1):
            return
        self._missing_below(next_seq)
        self.max_seq = next_seq - 1

    def _missing_below(self, seq: int) -> None:
        """A gap from the next expected number up to `seq - 1`, if there is one (`seq` > max_seq)."""
        expected = 0 if self.max_seq is None else self.max_seq + 1
        if seq > expected:
            gap = Gap(expected, seq - 1)
            self.gaps.append(gap)
            self.changed.append(gap)

    def _fill(self, index: int, gap: Gap, seq: int) -> None:
        if gap.first == gap.last:  # the gap is now closed
            gap.first = gap.last + 1
            del self.gaps[index]
        elif seq == gap.first:
            gap.first += 1
        elif seq == gap.last:
            gap.last -= 1
        else:  # split in two: the stored row keeps the lower half
            upper = Gap(seq + 1, gap.last)
            gap.last = seq - 1
            self.gaps.insert(index + 1, upper)
            self.changed.append(upper)
        if gap not in self.changed:
            self.changed.append(gap)
