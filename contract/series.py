"""A compressed reading's series from its points (docs/protocol.md, "Compressed series").

A Pi sensor compresses a reading into points (at_ms, value) such that linear interpolation between
consecutive points is within the stated maximum error of every sample (swinging door or mixed
PLA). A jump between two lines is two points at adjacent sample times: nothing was sampled
between them. The fleet serves the series this way; the edge's compressors are tested against it.
"""

from bisect import bisect_right
from collections.abc import Iterable, Sequence

Knot = tuple[int, float]  # (at_ms, value)


def interpolate(knots: Sequence[Knot], times: Iterable[int]) -> list[float | None]:
    """The value at each time: linear between the two points around it (a point's own value at
    its time); None before the first point or after the last (the device said nothing there).
    `knots` in increasing time, one per time."""
    stamps = [t for t, _ in knots]
    out: list[float | None] = []
    for t in times:
        i = bisect_right(stamps, t)
        if i == 0 or (i == len(knots) and t > stamps[-1]):
            out.append(None)
        elif stamps[i - 1] == t:
            out.append(knots[i - 1][1])
        else:
            (t0, v0), (t1, v1) = knots[i - 1], knots[i]
            out.append(v0 + (v1 - v0) * (t - t0) / (t1 - t0))
    return out
