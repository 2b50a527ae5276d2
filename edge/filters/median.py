"""Spike rejection: the median of the last `n` samples.

A single-sample spike (a dust grain in the SDS011's beam, a bit flip on a long RS-485 line) is
removed entirely with n = 3, two consecutive ones with n = 5; a real step passes after n // 2 + 1
samples. The window is bounded by `n` (at most 15).
"""

from collections import deque

MAX_WINDOW = 15


class Median:
    def __init__(self, n: int = 5) -> None:
        if not 1 <= n <= MAX_WINDOW:
            raise ValueError(f"median window must be 1..{MAX_WINDOW} samples")
        self.n = n
        self._window: deque[float] = deque(maxlen=n)

    def add(self, value: float) -> float:
        """Take a sample; the median of the window so far (the lower middle for an even count)."""
        self._window.append(value)
        ordered = sorted(self._window)
        return ordered[(len(ordered) - 1) // 2]
