"""Streams (`ses`) and sequence numbers (`seq`): see "Streams" in docs/protocol.md.

`ses` is a persistent counter in the state folder, incremented when the agent starts and again
before every connection attempt (the attempt's will carries it). A value opens a stream whose
`seq` starts at 0. Every upstream message is stamped when it is created, so a message queued
during an outage keeps its stamp when it is replayed later.

A counter that is lost (no `session.json`: a new device, a wiped or replaced SD card; or a damaged
one) restarts at a random 48-bit value, and above every stream still in the store-and-forward queue:
neither the clock (a Pi without NTP starts at its last shutdown or at 1970) nor 0 is safe, as the
fleet would take the new streams' messages for duplicates of old ones.
"""

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract import CONTRACT_VERSION
from edge.statefile import read_json, set_aside, write_json

if TYPE_CHECKING:
    from edge.queue import Outbox

log = logging.getLogger(__name__)

# A Pi has no real-time clock: until NTP sets it, it starts near its last shutdown or at 1970.
# A clock earlier than this is treated as unknown and messages carry `ts: null`.
CLOCK_VALID_AFTER_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def wall_clock_ms() -> int | None:
    """Unix time in milliseconds, or None while the clock is evidently not set."""
    now = time.time_ns() // 1_000_000
    return now if now >= CLOCK_VALID_AFTER_MS else None


def restart_value() -> int:
    """Where a lost counter restarts: a random 48-bit number with its top bit set (2^47 to 2^48 - 1).

    Above any counter that counted up from 0 or from the clock in seconds, and, for a counter
    that restarted this way before, different from it with overwhelming odds; the fleet notices
    one that lands below (docs/protocol.md, "Streams").
    """
    return 1 << 47 | int.from_bytes(os.urandom(6), "big")


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
        saved = read_json(path, None, if_corrupt=None)
        if saved is not None and not _is_counter(saved):
            set_aside(path, "not a session counter")
            saved = None
        # True when the counter is lost (missing or damaged file): it restarts at a random value,
        # which `keep_above` then raises above the streams still queued.
        self.restarted = saved is None
        if saved is None:
            saved = {"ses": restart_value(), "boots": 0}
            log.warning("%s: no session counter; streams restart at %d", path, saved["ses"])
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

    def keep_above(self, ses: int | None) -> None:
        """Make the next stream number higher than `ses` (a stream still in the queue)."""
        if ses is not None and ses >= self._ses:
            log.warning("%s: stream %d is still queued; streams restart above it", self.path, ses)
            self._ses = ses

    def next_session(self) -> int:
        """Reserve the stream of a new connection attempt (saved before it is used)."""
        self._ses += 1
        self._save()
        return self._ses

    def _save(self) -> None:
        # On a full disk the counter is overwritten in place rather than not recorded: a stream
        # that is not on disk could be opened again after a restart (docs/edge.md, "A full disk").
        # If even that fails, StateError: the caller opens no stream it could not record.
        write_json(self.path, {"ses": self._ses, "boots": self._boots}, in_place_when_full=True)


def highest_queued_ses(outbox: "Outbox", page: int = 1000) -> int | None:
    """The highest `ses` stamped on a message in the queue (read once, when the counter was lost)."""
    highest: int | None = None
    for payload in _queued_payloads(outbox, page):
        try:
            ses = json.loads(payload)["ses"]
        except (ValueError, KeyError, TypeError):
            continue  # not ours to judge here: the fleet refuses what is not a message
        if isinstance(ses, int) and (highest is None or ses > highest):
            highest = ses
    return highest


def _queued_payloads(outbox: "Outbox", page: int) -> Iterator[bytes]:
    after = 0
    while batch := outbox.peek(page, after=after):
        yield from (message.payload for message in batch)
        after = batch[-1].id


class Stamper:
    """Hands out (ses, seq) envelopes for the current stream."""

    def __init__(self, ses: int, *, clock: Callable[[], int | None] = wall_clock_ms) -> None:
        self.ses = ses
        self.next_seq = 0
        # the stream before the current one and how many messages it stamped: a birth's `prev`
        self.prev: dict[str, int] | None = None
        self._clock = clock

    def open_stream(self, ses: int) -> None:
        self.prev = {"ses": self.ses, "next_seq": self.next_seq}
        self.ses = ses
        self.next_seq = 0

    def stream_fields(self) -> dict[str, Any]:
        """What a birth says of the streams: where the new one starts and where the one before ended."""
        fields: dict[str, Any] = {"next_seq": self.next_seq}
        if self.prev is not None:
            fields["prev"] = dict(self.prev)
        return fields

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
