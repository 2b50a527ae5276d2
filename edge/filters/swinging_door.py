"""Swinging-door trending (SDT): keep the few points from which straight lines reproduce a
series within a stated maximum error.

From the last archived point A, every sample (t, v) allows the lines whose slope keeps it within
`max_error`: between (v - E - vA) / (t - tA) and (v + E - vA) / (t - tA). The "doors" are the
intersection of these slope ranges over the samples since A. When a sample closes them (the range
is empty), the previous sample's time P is archived and a new segment starts there.

Honesty: classic SDT archives P with its measured value, but the straight line from A to that
value can miss an earlier sample by slightly more than E. Here the archived value at P is taken
on a line from A whose slope lies inside the doors (the one nearest to P's measured value), so
linear interpolation between archived points is within `max_error` of **every** sample; the
value archived at P is itself within E of P's measurement. `max_error()` checks exactly that.

`max_interval_ms` bounds the time between archived points (a heartbeat for a steady value).
State is one anchor, one pending sample and two slopes.
"""

from bisect import bisect_right
from collections.abc import Iterable, Sequence

Point = tuple[int, float]  # (t_ms, value)


class SwingingDoor:
    def __init__(self, max_error: float, max_interval_ms: int | None = None) -> None:
        if max_error < 0:
            raise ValueError("max_error must not be negative")
        self.max_error = max_error
        self.max_interval_ms = max_interval_ms
        self._anchor: Point | None = None
        self._pending: Point | None = None
        self._low = 0.0  # the doors: the range of slopes from the anchor still allowed
        self._high = 0.0

    def add(self, t_ms: int, value: float) -> list[Point]:
        """Take a sample (times increasing); the points archived because of it, oldest first."""
        anchor = self._anchor
        if anchor is None:
            self._anchor = (t_ms, value)
            return [(t_ms, value)]
        if t_ms <= (self._pending or anchor)[0]:
            return []  # not later than what is held: a repeated sample carries nothing new
        out: list[Point] = []
        low, high = self._slopes(anchor, t_ms, value)
        if self._pending is not None:
            low, high = max(low, self._low), min(high, self._high)
            if low > high:  # the doors closed: archive at the previous sample, start from there
                archived = self._archive()
                out.append(archived)
                low, high = self._slopes(archived, t_ms, value)
        self._low, self._high = low, high
        self._pending = (t_ms, value)
        assert self._anchor is not None
        if self.max_interval_ms is not None and t_ms - self._anchor[0] >= self.max_interval_ms:
            out.append(self._archive())
        return out

    def flush(self) -> list[Point]:
        """Archive the sample held back (at the end of a series, or before a pause)."""
        return [self._archive()] if self._pending is not None else []

    def _slopes(self, anchor: Point, t_ms: int, value: float) -> tuple[float, float]:
        dt = t_ms - anchor[0]
        return (value - self.max_error - anchor[1]) / dt, (value + self.max_error - anchor[1]) / dt

    def _archive(self) -> Point:
        assert self._anchor is not None and self._pending is not None
        (t0, v0), (t, v) = self._anchor, self._pending
        slope = min(max((v - v0) / (t - t0), self._low), self._high)
        point = (t, v0 + slope * (t - t0))
        self._anchor, self._pending = point, None
        return point


def reconstruct(points: Sequence[Point], times: Iterable[int]) -> list[float]:
    """Linear interpolation between archived points (held flat outside them)."""
    stamps = [t for t, _ in points]
    out = []
    for t in times:
        i = bisect_right(stamps, t)
        if i == 0:
            out.append(points[0][1])
        elif i == len(points):
            out.append(points[-1][1])
        else:
            (t0, v0), (t1, v1) = points[i - 1], points[i]
            out.append(v0 + (v1 - v0) * (t - t0) / (t1 - t0))
    return out


def hold(points: Sequence[Point], times: Iterable[int]) -> list[float]:
    """Sample and hold: each time gets the last point sent at or before it (a deadband's view)."""
    stamps = [t for t, _ in points]
    return [points[max(0, bisect_right(stamps, t) - 1)][1] for t in times]


def max_error(samples: Sequence[Point], points: Sequence[Point], *, interpolate: bool = True) -> float:
    """The largest difference between a sample and its reconstruction from `points`."""
    times = [t for t, _ in samples]
    rebuilt = reconstruct(points, times) if interpolate else hold(points, times)
    return max((abs(v - r) for (_, v), r in zip(samples, rebuilt, strict=True)), default=0.0)
