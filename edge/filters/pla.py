"""Mixed piecewise-linear approximation (PLA) under a maximum error: fewer points than the
swinging door at the same proven error, sent as the same kind of points.

A segment is a line within `max_error` (E) of every sample it covers. While it grows, the
compressor keeps *every* line still allowed, as a convex polygon in (value at the segment's start,
slope) space: each sample (t, v) cuts it with two half-planes, a + s·(t - t0) within v ± E (the
feasible window of the optimal PLA family: O'Rourke 1981, Xie et al. 2014). A segment ends when a
sample empties its polygon.

Segments meet at knots, joint or disjoint (the "mixed" PLA of Luo et al. 2015):
- free: a segment that starts fresh at the sample the previous one missed. It costs a second
  point: the previous segment's end at its last sample, then the new start at the next sample
  (linear interpolation between these two adjacent samples covers no sample);
- joined: a segment that starts where the previous one ends, with a start value the previous
  segment's lines can reach there: at one of that segment's last `JOINT_BACK` samples (cutting it
  there), at one of `GAP_BACK` times between two of those samples (cutting it at the first: its
  lines up to that sample go on past it), or at one of `BETWEEN` times between its last sample and
  the next one (its lines go on past its last sample: the knot of two lines need not be at a
  sample, as in the slide filter of Elmeleegy et al. 2009). One point.
  These joined candidates grow beside the free one, on the same samples; when the free one ends,
  the joined one that reaches furthest is taken if it misses at most `SLACK` of the samples the
  free one covers (they are taken again by the next segment).
Joined segments form a chain whose lines are not chosen until the chain ends (a free segment, a
flush, a heartbeat): then a line is chosen in the last polygon, and going back, each earlier
segment takes a line of its polygon through the knot its successor starts from. So the chain keeps
all the freedom a greedy pass can give it.

The output is plain (t_ms, value) points: linear interpolation between consecutive points
(`swinging_door.reconstruct`) is within E of every sample, as for the swinging door (held with a
margin of 1e-9·E for float rounding; `tests/edge/roles/test_pla.py` checks it on random and real
series). Values are rounded to `decimals` places, a step of at most E/50 (E = 0.5 or 2: 0.01;
E = 20: 0.1), for short JSON numbers; the lines are fitted within E minus half a step, so rounding
both ends of a line moves it by at most half a step.

Latency and memory: points are sent when a chain ends. `max_interval_ms` bounds the delay: when a
sample comes that long after the last point sent, everything held is sent (ending at that sample)
and the next segment starts from that point, so the receiver's series is never more than
`max_interval_ms` behind the newest sample, as with the swinging door. Samples held: at most
`MAX_HELD` (a segment ends there); chain: at most `MAX_CHAIN` segments (the next one is free).
"""

import math
from dataclasses import dataclass, field

Point = tuple[int, float]  # (t_ms, value)
Vertex = tuple[float, float]  # (value at the segment's start, slope per ms)

_MARGIN = 1e-9  # of E: room for float rounding in the polygon's arithmetic
SLACK = 10  # samples a joined segment may cover less than a disjoint one and still be chosen
MAX_HELD = 4096  # samples held for a segment: at the bound it ends there (memory stays bounded)
JOINT_BACK = 6  # a joined segment may start at (or after) any of the previous one's last samples
BETWEEN = 7  # knots tried between the previous segment's last sample and the next one
MAX_CHAIN = 256  # joined segments whose lines are not chosen yet: at the bound the next is disjoint
GAP_BACK = 5  # knots tried between each two of those last samples


def _clip(poly: list[Vertex], dt: float, bound: float, sign: float) -> list[Vertex]:
    """The part of a convex polygon where sign·(a + s·dt - bound) <= 0 (Sutherland-Hodgman)."""
    out: list[Vertex] = []
    n = len(poly)
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        fp = sign * (p[0] + p[1] * dt - bound)
        fq = sign * (q[0] + q[1] * dt - bound)
        if fp <= 0:
            out.append(p)
        if (fp < 0 < fq) or (fq < 0 < fp):
            r = fp / (fp - fq)
            out.append((p[0] + r * (q[0] - p[0]), p[1] + r * (q[1] - p[1])))
    return _dedupe(out)


def _dedupe(poly: list[Vertex]) -> list[Vertex]:
    out: list[Vertex] = []
    for p in poly:
        if not out or p != out[-1]:
            out.append(p)
    while len(out) > 1 and out[0] == out[-1]:
        out.pop()
    return out


def _window(lo: float, hi: float, dt: float, v: float, e: float) -> list[Vertex]:
    """Start value in [lo, hi] and value at dt within v ± e: a parallelogram (or less)."""
    return _dedupe([(lo, (v - e - lo) / dt), (hi, (v - e - hi) / dt), (hi, (v + e - hi) / dt),
                    (lo, (v + e - lo) / dt)])


def _chord(poly: list[Vertex], a: float) -> tuple[float, float]:
    """The slopes the polygon allows at start value `a` (a vertex's a, so never empty)."""
    slopes = []
    n = len(poly)
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        if p[0] == a:
            slopes.append(p[1])
        if min(p[0], q[0]) < a < max(p[0], q[0]):
            slopes.append(p[1] + (a - p[0]) / (q[0] - p[0]) * (q[1] - p[1]))
    return min(slopes), max(slopes)


def _width(slopes: tuple[float, float]) -> float:
    return slopes[1] - slopes[0]


@dataclass(slots=True)
class _Segment:
    """The lines still allowed for a segment that starts at t0 with a value in [lo, hi]."""

    t0: int
    lo: float
    hi: float
    last_t: int  # the last sample it covers
    start_sent: bool = False  # it starts from the last point sent (after a heartbeat)
    poly: list[Vertex] | None = None  # None until a second sample
    alive: bool = True  # no sample has emptied it yet
    # (t, value, polygon) after each sample taken, for a later segment joined to an earlier knot
    history: list[tuple[int, float, list[Vertex]]] = field(default_factory=list)
    cut: int | None = None  # joined: the previous segment's sample it starts at (ends that one)


def _point_in(poly: list[Vertex]) -> Vertex:
    """A point inside a convex polygon: its vertices' mean."""
    return sum(v[0] for v in poly) / len(poly), sum(v[1] for v in poly) / len(poly)


def _through(poly: list[Vertex], dt: float, value: float) -> Vertex:
    """A line of the polygon worth `value` at dt (the middle of that chord); the nearest vertex
    when rounding left the chord empty."""
    hits: list[Vertex] = []
    n = len(poly)
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        fp, fq = p[0] + p[1] * dt - value, q[0] + q[1] * dt - value
        if fp == 0:
            hits.append(p)
        if (fp < 0 < fq) or (fq < 0 < fp):
            r = fp / (fp - fq)
            hits.append((p[0] + r * (q[0] - p[0]), p[1] + r * (q[1] - p[1])))
    if not hits:
        return min(poly, key=lambda v: abs(v[0] + v[1] * dt - value))
    lo, hi = min(hits), max(hits)
    return (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2


class MixedPla:
    def __init__(self, max_error: float, max_interval_ms: int | None = None, *, slack: int = SLACK) -> None:
        if max_error < 0:
            raise ValueError("max_error must not be negative")
        self.max_error = max_error
        self.max_interval_ms = max_interval_ms
        self.slack = slack
        # values sent rounded to a decimal step of at most E/50 (short JSON numbers); the lines
        # keep within E minus half a step, so the rounded ones keep within E
        self.decimals = math.ceil(-math.log10(max_error / 50)) if max_error > 0 else None
        step = 10.0 ** -self.decimals if self.decimals is not None else 0.0
        self._e = (max_error - step / 2) * (1 - _MARGIN)
        self._chain: list[_Segment] = []  # closed segments joined end to start, lines not chosen yet
        self._free: _Segment | None = None  # starts at the first sample the chain's last one missed
        self._joints: list[_Segment] = []  # start at one of the chain's last samples, joined to it
        self._held: list[Point] = []  # the samples since the free segment's start
        self._sent_t: int | None = None  # the time of the last point sent
        self.segments = 0  # segments closed
        self.disjoint = 0  # knots sent as two points

    def add(self, t_ms: int, value: float) -> list[Point]:
        """Take a sample (times increasing); the points sent because of it, oldest first."""
        if self._held and t_ms <= self._held[-1][0]:
            return []  # not later than what is held: a repeated sample carries nothing new
        out: list[Point] = []
        todo = [(t_ms, value)]
        while todo:
            t, v = todo.pop(0)
            free = self._free
            if free is None:
                self._start(t, v)
                continue
            self._held.append((t, v))
            alive = self._extend(free, t, v)
            for joint in self._joints:
                self._extend(joint, t, v)
            if not alive or len(self._held) >= MAX_HELD:
                chosen = self._choose(flushing=alive)
                out += self._close(chosen)
                todo[:0] = [p for p in self._held if p[0] > chosen.last_t]
                self._free, self._joints = None, []
                self._held = []
        if (self.max_interval_ms is not None and self._sent_t is not None
                and t_ms - self._sent_t >= self.max_interval_ms):
            out += self.flush()
            if out:  # the next segment goes on from the point just sent
                t, v = out[-1]
                self._free = _Segment(t, v, v, t, start_sent=True)
                self._held = [(t, v)]
        if out:
            self._sent_t = out[-1][0]
        return out

    def flush(self) -> list[Point]:
        """Send everything held (at the end of a series, or before a pause); the next sample
        starts a new series."""
        out: list[Point] = []
        while self._free is not None:
            chosen = self._choose(flushing=True)
            out += self._close(chosen)
            rest = [p for p in self._held if p[0] > chosen.last_t]
            self._free, self._joints = None, []
            self._held = []
            for t, v in rest:
                out += self.add(t, v) if self._free is not None else self._begin(t, v)
        out += self._emit_chain()
        if out:
            self._sent_t = out[-1][0]
        return out

    def _begin(self, t: int, v: float) -> list[Point]:
        self._start(t, v)
        return []

    def _choose(self, flushing: bool = False) -> _Segment:
        """The joined segment that reaches furthest, when it covers the samples the free one
        does, less `slack`: one point instead of two; the samples it leaves start the next one."""
        free = self._free
        assert free is not None
        if not self._joints:
            return free
        joint = max(self._joints, key=lambda j: (j.last_t, j.cut))
        if joint.last_t >= free.last_t:
            return joint
        missed = sum(1 for t, _ in self._held if joint.last_t < t <= free.last_t)
        return joint if missed <= (0 if flushing else self.slack) else free

    def _start(self, t_ms: int, value: float) -> None:
        self._free = _Segment(t_ms, value - self._e, value + self._e, t_ms)
        self._held = [(t_ms, value)]
        self._joints = []
        self._extend(self._free, t_ms, value)
        if self._chain and len(self._chain) < MAX_CHAIN:
            last = self._chain[-1]
            tail = last.history[-JOINT_BACK:]
            for k, (tm, _, poly) in enumerate(tail):
                if not poly or tm == last.t0:
                    continue
                ends = [a + s * (tm - last.t0) for a, s in poly]
                joint = _Segment(tm, min(ends), max(ends), tm, cut=tm)
                if all(self._extend(joint, t, v) for t, v, _ in tail[k + 1:]) and self._extend(joint, t_ms, value):
                    self._joints.append(joint)
                if k + 1 < len(tail):  # knots in the gap after that sample
                    t1 = tail[k + 1][0]
                    for j in range(1, GAP_BACK + 1):
                        tau = tm + (t1 - tm) * j // (GAP_BACK + 1)
                        if not tm < tau < t1:
                            continue
                        ends = [a + s * (tau - last.t0) for a, s in poly]
                        joint = _Segment(tau, min(ends), max(ends), tau, cut=tm)
                        taken = all(self._extend(joint, t, v) for t, v, _ in tail[k + 1:])
                        if taken and self._extend(joint, t_ms, value):
                            self._joints.append(joint)
            if last.poly:  # knots between the samples: the previous lines go on past its last one
                gap = t_ms - last.last_t
                for tau in sorted({last.last_t + gap * k // (BETWEEN + 1) for k in range(1, BETWEEN + 1)}):
                    if not last.last_t < tau < t_ms:
                        continue
                    ends = [a + s * (tau - last.t0) for a, s in last.poly]
                    joint = _Segment(tau, min(ends), max(ends), tau, cut=last.last_t)
                    if self._extend(joint, t_ms, value):
                        self._joints.append(joint)
        if self._sent_t is None:
            self._sent_t = t_ms

    def _extend(self, seg: _Segment, t_ms: int, value: float) -> bool:
        if not seg.alive:
            return False
        dt = float(t_ms - seg.t0)
        if dt == 0:
            seg.history.append((t_ms, value, []))
            return True
        if seg.poly is None:
            poly = _window(seg.lo, seg.hi, dt, value, self._e)
        else:
            poly = _clip(_clip(seg.poly, dt, value + self._e, 1.0), dt, value - self._e, -1.0)
        if not poly:
            seg.alive = False
            return False
        seg.poly, seg.last_t = poly, t_ms
        if len(seg.history) >= JOINT_BACK:
            del seg.history[0]
        seg.history.append((t_ms, value, poly))
        return True

    def _close(self, seg: _Segment) -> list[Point]:
        """End a segment: joined, it extends the chain; free, the chain is sent (its lines chosen
        from the last back to the first) and a new one starts. The points that became known."""
        self.segments += 1
        out: list[Point] = []
        if seg.cut is None:
            if self._chain:
                self.disjoint += 1
            out = self._emit_chain()
        else:  # the previous segment now ends at the knot this one starts from
            last = self._chain[-1]
            last.poly = next(poly for t, _, poly in last.history if t == seg.cut)
            last.last_t = seg.cut
        self._chain.append(seg)
        return out

    def _emit_chain(self) -> list[Point]:
        chain, self._chain = self._chain, []
        if not chain:
            return []
        last = chain[-1]
        if last.start_sent or last.poly is None:
            a = last.lo if last.start_sent else (last.lo + last.hi) / 2
            s = 0.0 if last.poly is None else _point_in(last.poly)[1]
        else:
            a, s = _point_in(last.poly)
        points = [(last.last_t, a + s * (last.last_t - last.t0))] if last.last_t > last.t0 else []
        for seg, after in zip(reversed(chain[:-1]), reversed(chain[1:]), strict=True):
            points.append((after.t0, a))  # the knot where seg ends and `after` starts
            assert seg.poly is not None
            a, _ = (seg.lo, 0.0) if seg.start_sent else _through(seg.poly, after.t0 - seg.t0, a)
        if not chain[0].start_sent:
            points.append((chain[0].t0, a))
        points.reverse()
        if self.decimals is None:
            return points
        return [(t, round(v, self.decimals)) for t, v in points]
