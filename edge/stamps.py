"""Streams (`ses`) and sequence numbers (`seq`): see "Streams" in docs/protocol.md.

`ses` is a persistent counter in the state folder, incremented when the agent starts and again
before every connection attempt (the attempt's will carries it). A value opens a stream whose
`seq` starts at 0. Every upstream message is stamped when it is created, so a message queued
during an outage keeps its stamp when it is replayed later.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.statefile import read_json, set_aside, write_json
from fleet.contract import CONTRACT_VERSION

# A Pi has no real-time clock: until NTP sets it, it starts near its last shutdown or at 1970.
# A clock earlier than this is treated as unknown and messages carry `ts: null`.
CLOCK_VALID_AFTER_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def wall_clock_ms() -> int | None:
    """Unix time in milliseconds, or None while the clock is evidently not set."""
    now = time.time_ns() // 1_000_000
    return now if now >= CLOCK_VALID_AFTER_MS else None


def _is_counter(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(value.get(key), int) and not isinstance(value.get(key), bool) and value[key] >= 0
        for key in ("ses", "boots")
    )


@dataclass(frozen=True, slots=True)
class Boot:
    """What this start of the agent is: its start count and the stream it opened."""

    n: int
    ses: int


class SessionCounter:
    """The persistent `ses` counter and start count, in `<state_dir>/session.json`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        saved = read_json(path, {"ses": 0, "boots": 0}, if_corrupt=None)
        if saved is not None and not _is_counter(saved):
            set_aside(path, "not a session counter")
            saved = None
        if saved is None:
            # The counter is lost. Restarting it at 0 would reuse (ses, seq) stamps the fleet
            # has seen, and it would drop new messages as duplicates; the clock in seconds is
            # above any value a counter that started at 0 can have reached.
            now = wall_clock_ms()
            saved = {"ses": now // 1000 if now is not None else 0, "boots": 0}
        self._ses: int = saved["ses"]
        self._boots: int = saved["boots"]

    @property
    def current(self) -> int:
        return self._ses

    def start(self) -> Boot:
        """Count a start of the agent and open its first stream."""
        self._boots += 1
        self._ses += 1
        self._save()
        return Boot(n=self._boots, ses=self._ses)

    def next_session(self) -> int:
        """Reserve the stream of a new connection attempt (saved before it is used)."""
        self._ses += 1
        self._save()
        return self._ses

    def _save(self) -> None:
        write_json(self.path, {"ses": self._ses, "boots": self._boots})


class Stamper:
    """Hands out (ses, seq) envelopes for the current stream."""

    def __init__(self, ses: int, *, clock: Callable[[], int | None] = wall_clock_ms) -> None:
        self.ses = ses
        self.next_seq = 0
        self._clock = clock

    def open_stream(self, ses: int) -> None:
        self.ses = ses
        self.next_seq = 0

    def now_ms(self) -> int | None:
        return self._clock()

    def next_envelope(self) -> dict[str, Any]:
        """The envelope (v, ses, seq, ts) the next message will carry; `advance` takes it."""
        return {"v": CONTRACT_VERSION, "ses": self.ses, "seq": self.next_seq, "ts": self._clock()}

    def advance(self) -> None:
        self.next_seq += 1

    def presence(self, ses: int) -> dict[str, Any]:
        """The envelope of a birth or death: not numbered, `ses` is the connection's stream."""
        return {"v": CONTRACT_VERSION, "ses": ses, "ts": self._clock()}
