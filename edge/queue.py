"""The persistent store-and-forward queue (SQLite, WAL) of upstream messages.

Messages are appended already stamped (ses, seq), read back in the order they were appended,
and removed only after the broker acknowledged them (PUBACK), so an outage of the link or the
broker, or a restart of the agent, loses nothing and replays in order.

Policy at the bound: the queue holds at most `max_messages`. Appending to a full queue drops the
oldest messages to make room and adds them to a persistent `dropped` counter (reported in health).
The newest data is what operators act on, and the fleet sees the dropped ones as a gap in the
stream. With the contract's 8 KiB limit per message the file stays below max_messages × 8 KiB.

Commits: appends made during one turn of the event loop share one transaction, committed at the
end of that turn (or after `BATCH_MAX` writes). That is what lets a role append thousands of
messages a second. `synchronous=NORMAL` makes a commit survive a crash of the process; a power
cut can lose the last commits since the WAL was last synced.
"""

import asyncio
import contextlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from edge.errors import StateError

log = logging.getLogger(__name__)

BATCH_MAX = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int
    topic: str
    payload: bytes
    qos: int


class Outbox:
    """A bounded FIFO of messages on disk. Not thread-safe: use it from one thread (the loop's)."""

    def __init__(self, path: Path, *, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.path = path
        self.max_messages = max_messages
        self._conn = self._connect(path)
        self._depth = int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        row = self._conn.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        self._dropped = int(row[0]) if row else 0
        self._pending_writes = 0
        self._commit_scheduled = False
        self._closed = False
        # `appended`: set by every append, cleared by the sender before it looks for more.
        # `empty`: set while no message waits (what a draining stop waits for).
        self.appended = asyncio.Event()
        self.empty = asyncio.Event()
        if self._depth > max_messages:  # the bound was lowered since the last run
            self._begin()
            self._drop_oldest(self._depth - max_messages)
            self.commit()
        self._signal()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return Outbox._open(path)
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError):
                raise StateError(f"cannot open queue {path}: {err}") from err
            # A corrupt file must not keep an unattended device from starting: keep it aside
            # for a post-mortem and start an empty queue.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("queue file %s is corrupt (%s); moved it to %s", path, err, aside)
            path.rename(aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    path.with_name(path.name + suffix).unlink()
            return Outbox._open(path)
        except OSError as err:
            raise StateError(f"cannot open queue {path}: {err.strerror}") from err

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    @property
    def depth(self) -> int:
        """Messages waiting to be acknowledged by the broker."""
        return self._depth

    @property
    def dropped(self) -> int:
        """Messages discarded because the queue was full, since the queue file was created."""
        return self._dropped

    def append(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Store a message at the tail; when the queue is full, drop the oldest one first."""
        self._begin()
        if self._depth >= self.max_messages:
            self._drop_oldest(self._depth - self.max_messages + 1)
        self._conn.execute("INSERT INTO outbox (topic, payload, qos) VALUES (?, ?, ?)", (topic, payload, qos))
        self._depth += 1
        self.appended.set()
        self._signal()
        self._wrote()

    def peek(self, limit: int, *, after: int = 0) -> list[QueuedMessage]:
        """Up to `limit` messages with an id above `after`, oldest first; they stay until acked."""
        rows = self._conn.execute(
            "SELECT id, topic, payload, qos FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
        return [QueuedMessage(int(i), str(t), bytes(p), int(q)) for i, t, p, q in rows]

    def ack_through(self, message_id: int) -> int:
        """Remove every message up to and including `message_id` (the broker has them)."""
        self._begin()
        removed = self._conn.execute("DELETE FROM outbox WHERE id <= ?", (message_id,)).rowcount
        self._depth -= removed
        self._signal()
        self._wrote()
        return removed

    def commit(self) -> None:
        self._commit_scheduled = False
        self._pending_writes = 0
        if not self._closed and self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        if not self._closed:
            self.commit()
            self._conn.close()
            self._closed = True

    def _signal(self) -> None:
        if self._depth:
            self.empty.clear()
        else:
            self.empty.set()

    def _begin(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN")

    def _drop_oldest(self, count: int) -> None:
        removed = self._conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (count,)
        ).rowcount
        self._depth -= removed
        self._dropped += removed
        self._conn.execute(
            "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (self._dropped,),
        )

    def _wrote(self) -> None:
        self._pending_writes += 1
        if self._pending_writes >= BATCH_MAX:
            self.commit()
            return
        if self._commit_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside an event loop (tools, tests): commit each write
            self.commit()
            return
        self._commit_scheduled = True
        loop.call_soon(self.commit)
