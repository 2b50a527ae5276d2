"""Reconnect delays: exponential, capped, with jitter so a city's devices do not reconnect in step
after the broker comes back."""

import random


class Backoff:
    """Delays of `minimum * 2**n` seconds, capped at `maximum`, each drawn from [d/2, d].

    The attempt count stops growing once the cap is reached, so the delay never exceeds
    `maximum` however long the outage lasts.
    """

    def __init__(self, minimum: float, maximum: float, *, rng: random.Random | None = None) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError("need 0 < minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.minimum * 2**self._attempt)
        if ceiling < self.maximum:
            self._attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0
