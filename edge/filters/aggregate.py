"""Per-window aggregates (min, max, mean, count): one summary a minute instead of every sample.

Windows are aligned to multiples of `window_ms` (a minute starts at :00). A window is closed by the
first sample of a later window (or by `close(now)` when no sample comes); empty windows produce
nothing. Only the running figures of the open window are kept.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Aggregate:
    start_ms: int
    minimum: float
    maximum: float
    mean: float
    count: int


class WindowAggregator:
    def __init__(self, window_ms: int = 60_000) -> None:
        if window_ms <= 0:
            raise ValueError("window must be positive")
        self.window_ms = window_ms
        self._start: int | None = None
        self._min = 0.0
        self._max = 0.0
        self._sum = 0.0
        self._count = 0

    def add(self, t_ms: int, value: float) -> Aggregate | None:
        """Take a sample; the previous window's aggregate if this sample closed it."""
        start = t_ms - t_ms % self.window_ms
        closed = None
        if self._start is not None and start != self._start:
            closed = self._take()
        if self._start is None:
            self._start = start
            self._min = self._max = value
            self._sum = 0.0
            self._count = 0
        self._min = min(self._min, value)
        self._max = max(self._max, value)
        self._sum += value
        self._count += 1
        return closed

    def close(self, now_ms: int) -> Aggregate | None:
        """The open window's aggregate if `now_ms` is past its end (a sensor gone quiet)."""
        if self._start is not None and now_ms >= self._start + self.window_ms:
            return self._take()
        return None

    def _take(self) -> Aggregate:
        assert self._start is not None
        result = Aggregate(self._start, self._min, self._max, self._sum / self._count, self._count)
        self._start = None
        return result
