"""Which new connections the embedded broker takes: a cap on open connections and a per-address
rate limit, decided before a byte is read, so a flood costs the broker almost nothing.

Pure bookkeeping (no sockets, no asyncio) with an injectable clock, so it is tested on its own.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

ADDRESS_TABLE_MAX = 4096  # per-address buckets kept; see `_make_room` for the policy at the bound


@dataclass(frozen=True)
class BrokerBounds:
    """The embedded broker's limits (FLEET_EMBEDDED_BROKER_* settings; docs/identity.md)."""

    max_connections: int = 1000
    connect_timeout_s: float = 5.0
    connects_per_s: float = 5.0  # per remote address, sustained
    connect_burst: int = 30  # per remote address, at once


class Refusal(Enum):
    CAP = "the connection cap is reached"
    RATE = "over the per-address connection rate"


class Admission:
    def __init__(self, bounds: BrokerBounds, clock: Callable[[], float] = time.monotonic) -> None:
        self.bounds = bounds
        self.open_count = 0
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)

    def open(self, address: str) -> Refusal | None:
        """Count a new connection in, or say why it is refused (then it was not counted)."""
        if self.open_count >= self.bounds.max_connections:
            return Refusal.CAP
        if not self._take_token(address):
            return Refusal.RATE
        self.open_count += 1
        return None

    def close(self) -> None:
        self.open_count -= 1

    def _take_token(self, address: str) -> bool:
        now = self._clock()
        burst = float(self.bounds.connect_burst)
        tokens, at = self._buckets.pop(address, (burst, now))
        tokens = min(burst, tokens + (now - at) * self.bounds.connects_per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._make_room(now)
        self._buckets[address] = (tokens, now)  # most recently seen last
        return allowed

    def _make_room(self, now: float) -> None:
        """At the bound, forget addresses whose bucket has refilled (forgetting them changes
        nothing); if none has, forget the least recently seen one, which at worst gives that
        address a fresh burst."""
        if len(self._buckets) < ADDRESS_TABLE_MAX:
            return
        burst = float(self.bounds.connect_burst)
        full = [a for a, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.bounds.connects_per_s >= burst]
        for address in full:
            del self._buckets[address]
        if len(self._buckets) >= ADDRESS_TABLE_MAX:
            self._buckets.popitem(last=False)


class LogThrottle:
    """One log line per reason and interval, with how many were left unsaid: a flood must not
    turn into a flood of log lines."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._unsaid: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._unsaid[key] = self._unsaid.get(key, 0) + 1
            return
        self._last[key] = now
        unsaid = self._unsaid.pop(key, 0)
        if unsaid:
            self._log.warning(message + " (and %d more like it in the last %.0f s)", *args, unsaid,
                              now - (last or now))
        else:
            self._log.warning(message, *args)
