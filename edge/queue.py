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

A full disk (docs/edge.md, "A full disk"): a write that fails is rolled back, and what that
transaction held goes back to memory with its ids, so the counters stay true and no id is handed
out twice. While the state folder is full (`StateDisk.full`), new messages wait in memory,
bounded by `ram_max_bytes` (at the bound the oldest one not yet sent is dropped and counted), and
are sent from there; acknowledgements are kept in memory too. `resume` moves them into the file,
oldest first, when space returns; `close` tries once more and counts what it cannot store as
dropped. The ids of the file come before those in memory, so the queue's order is the id order.
"""

import asyncio
import bisect
import contextlib
import logging
import os
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from edge.errors import StateError
from edge.statefile import StateDisk, describe_write_error

log = logging.getLogger(__name__)

BATCH_MAX = 1000
# Messages held in memory while the disk is full: at most this many bytes by default
# (`queue.ram_max_bytes`), each counted as its topic and payload plus RAM_OVERHEAD.
RAM_MAX_BYTES = 8 << 20
RAM_OVERHEAD = 160
# Messages moved from memory into the file per transaction when space returns.
RESUME_CHUNK = 500

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


def _cost(message: QueuedMessage) -> int:
    return len(message.topic) + len(message.payload) + RAM_OVERHEAD


class Outbox:
    """A bounded FIFO of messages on disk (and in memory while the disk is full).

    Not thread-safe: use it from one thread (the loop's).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_messages: int,
        ram_max_bytes: int = RAM_MAX_BYTES,
        disk: StateDisk | None = None,
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if ram_max_bytes < 1:
            raise ValueError("ram_max_bytes must be at least 1")
        self.path = path
        self.max_messages = max_messages
        self.ram_max_bytes = ram_max_bytes
        self.disk = disk if disk is not None else StateDisk(path.parent, reserve_bytes=0)
        self._conn, self.exclusive = self._connect(path)
        # Messages up to this id are acknowledged; in the file until a delete of them commits.
        self._acked_through = 0
        self._delete_pending = False
        self._disk_depth = self._count_rows()
        row = self._conn.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        self._dropped = self._dropped_saved = int(row[0]) if row else 0
        self._next_id = self._last_id() + 1
        self._ram: deque[QueuedMessage] = deque()
        self._ram_bytes = 0
        # Messages up to this id went to the broker: they may have arrived, so they are never
        # dropped from memory (only acknowledged, or counted at `close`).
        self._sent_through = 0
        # The open transaction: what it appended and dropped, undone if it fails.
        self._tx_appended: list[QueuedMessage] = []
        self._tx_drops = 0
        self._pending_writes = 0
        self._commit_scheduled = False
        self._closed = False
        # `appended`: set by every append, cleared by the sender before it looks for more.
        # `empty`: set while no message waits (what a draining stop waits for).
        self.appended = asyncio.Event()
        self.empty = asyncio.Event()
        if self._disk_depth > max_messages and not self.disk.full:  # the bound was lowered
            try:
                self._begin()
                self._drop_oldest(self._disk_depth - max_messages)
            except sqlite3.Error as err:
                self._failed(err)
            else:
                self.commit()
        self._signal()

    @staticmethod
    def _connect(path: Path) -> tuple[sqlite3.Connection, bool]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                return Outbox._open(path), False
            except sqlite3.OperationalError as first:
                # On a full disk SQLite cannot make its shared-memory file (-shm). In exclusive
                # locking mode it keeps that index in memory: the queue can still be read and
                # sent; other processes cannot read the file until the agent stops.
                try:
                    conn = Outbox._open(path, exclusive=True)
                except sqlite3.OperationalError:
                    raise first from None
                log.warning(
                    "queue %s opened in exclusive locking mode (%s, %s)",
                    path,
                    first,
                    getattr(first, "sqlite_errorname", "?"),
                )
                return conn, True
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
            return Outbox._open(path), False
        except OSError as err:
            raise StateError(f"cannot open queue {path}: {err.strerror}") from err

    @staticmethod
    def _open(path: Path, *, exclusive: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            if exclusive:
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    @property
    def depth(self) -> int:
        """Messages waiting to be acknowledged by the broker (in the file and in memory)."""
        return self._disk_depth + len(self._ram)

    @property
    def in_memory(self) -> int:
        """Messages waiting in memory because the disk was full."""
        return len(self._ram)

    @property
    def dropped(self) -> int:
        """Messages discarded (queue full, memory bound, or not storable at stop), since the
        queue file was created."""
        return self._dropped

    @property
    def last_id(self) -> int:
        """The id of the newest message appended (0: none since the file was made)."""
        return self._next_id - 1

    @property
    def acked_through(self) -> int:
        """Messages up to this id were acknowledged by the broker in this run."""
        return self._acked_through

    def append(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Store a message at the tail; when the queue is full, drop the oldest one first.

        Never fails: a message that cannot be written waits in memory (see the module's doc).
        """
        message = QueuedMessage(self._next_id, topic, payload, qos)
        self._next_id += 1  # in memory: an id of a transaction that failed is not used again
        if self._ram or self.disk.full:
            self._hold([message])
        elif self._insert(message):
            self._wrote()
        self.appended.set()
        self._signal()

    def peek(self, limit: int, *, after: int = 0) -> list[QueuedMessage]:
        """Up to `limit` messages with an id above `after`, oldest first; they stay until acked."""
        floor = max(after, self._acked_through)
        rows = self._conn.execute(
            "SELECT id, topic, payload, qos FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (floor, limit)
        ).fetchall()
        batch = [QueuedMessage(int(i), str(t), bytes(p), int(q)) for i, t, p, q in rows]
        if len(batch) < limit and self._ram:
            start = bisect.bisect_right(self._ram, floor, key=lambda m: m.id)
            for index in range(start, min(len(self._ram), start + limit - len(batch))):
                batch.append(self._ram[index])
        return batch

    def sent(self, message_id: int) -> None:
        """Messages up to `message_id` went to the broker (the sender calls this)."""
        self._sent_through = max(self._sent_through, message_id)

    def ack_through(self, message_id: int) -> int:
        """Remove every message up to and including `message_id` (the broker has them)."""
        removed = 0
        if message_id > self._acked_through:
            on_disk = self._count_rows(message_id)
            self._acked_through = message_id
            self._disk_depth -= on_disk
            removed += on_disk
            self._delete_pending = True
            if not self._ram and not self.disk.full:
                try:
                    self._begin()
                except sqlite3.Error as err:
                    self._failed(err)
                else:
                    self._wrote()
        while self._ram and self._ram[0].id <= message_id:
            self._ram_bytes -= _cost(self._ram.popleft())
            removed += 1
        self._signal()
        return removed

    def commit(self) -> bool:
        """Commit the open transaction; False if it failed (its messages went to memory)."""
        self._commit_scheduled = False
        self._pending_writes = 0
        if self._closed or not self._conn.in_transaction:
            return True
        try:
            if self._dropped != self._dropped_saved:
                self._save_dropped()
            self._conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._failed(err)
            return False
        self._dropped_saved = self._dropped
        self._tx_appended.clear()
        self._tx_drops = 0
        return True

    def room_needed(self) -> int:
        """Bytes the file needs before `resume` is worth trying: what waits in memory, and room for
        the write-ahead log to grow to its checkpoint size (SQLite reuses it after a checkpoint,
        so a log that reached that size needs no more)."""
        page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        checkpoint_pages = int(self._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        try:
            wal_bytes = os.stat(f"{self.path}-wal").st_size
        except OSError:
            wal_bytes = 0
        return self._ram_bytes + max(0, page_size * checkpoint_pages - wal_bytes)

    def resume(self) -> int | None:
        """Move the messages held in memory into the file, oldest first, and write there again.

        The number moved, or None if a write failed (the rest stays in memory; `disk` is told).
        """
        if self._closed:
            return None
        moved = 0
        while self._ram:
            chunk = min(RESUME_CHUNK, len(self._ram))
            for _ in range(chunk):
                message = self._ram.popleft()
                self._ram_bytes -= _cost(message)
                if not self._insert(message):
                    return None
            if not self.commit():
                return None
            moved += chunk
        if self._delete_pending:
            try:
                self._begin()
            except sqlite3.Error as err:
                self._failed(err)
                return None
            if not self.commit():
                return None
        self._signal()
        return moved

    def close(self) -> int:
        """Commit, store what waits in memory if the disk allows, and close the file.

        Returns how many messages held in memory could not be stored: they are lost, and
        counted as dropped (in the file too, if that one small write still fits).
        """
        if self._closed:
            return 0
        self.commit()
        lost = 0
        if (self._ram or self._delete_pending) and self.resume() is None and self._ram:
            lost = len(self._ram)
            self._dropped += lost
            self._ram.clear()
            self._ram_bytes = 0
            with contextlib.suppress(sqlite3.Error):
                self._begin()
                self._save_dropped()
                self._conn.execute("COMMIT")
                self._dropped_saved = self._dropped
            with contextlib.suppress(sqlite3.Error):
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
        self._conn.close()
        self._closed = True
        self._signal()
        return lost

    # -- internals ------------------------------------------------------------------------------

    def _signal(self) -> None:
        if self.depth:
            self.empty.clear()
        else:
            self.empty.set()

    def _count_rows(self, through: int | None = None) -> int:
        """Rows in the file above the acknowledged ones (up to `through`, when given)."""
        if through is None:
            row = self._conn.execute("SELECT COUNT(*) FROM outbox WHERE id > ?", (self._acked_through,))
        else:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE id > ? AND id <= ?", (self._acked_through, through)
            )
        return int(row.fetchone()[0])

    def _last_id(self) -> int:
        highest = self._conn.execute("SELECT MAX(id) FROM outbox").fetchone()[0] or 0
        seq = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return max(int(highest), int(seq[0]) if seq else 0)

    def _begin(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN")
        if self._delete_pending:
            self._conn.execute("DELETE FROM outbox WHERE id <= ?", (self._acked_through,))
            self._delete_pending = False

    def _insert(self, message: QueuedMessage) -> bool:
        """Add to the open transaction; False if the write failed (then it waits in memory)."""
        try:
            self._begin()
            if self._disk_depth >= self.max_messages:
                self._drop_oldest(self._disk_depth - self.max_messages + 1)
            self._conn.execute(
                "INSERT INTO outbox (id, topic, payload, qos) VALUES (?, ?, ?, ?)",
                (message.id, message.topic, message.payload, message.qos),
            )
        except sqlite3.Error as err:
            self._tx_appended.append(message)
            self._failed(err)
            return False
        self._tx_appended.append(message)
        self._disk_depth += 1
        return True

    def _drop_oldest(self, count: int) -> None:
        removed = self._conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE id > ? ORDER BY id LIMIT ?)",
            (self._acked_through, count),
        ).rowcount
        self._disk_depth -= removed
        self._dropped += removed
        self._tx_drops += removed

    def _save_dropped(self) -> None:
        self._conn.execute(
            "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (self._dropped,),
        )

    def _failed(self, err: sqlite3.Error) -> None:
        """A write failed: undo the transaction in the counters, and keep its messages in memory."""
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        self._dropped -= self._tx_drops  # the rows it dropped are back
        self._tx_drops = 0
        back, self._tx_appended = self._tx_appended, []
        self._pending_writes = 0
        self._delete_pending = self._acked_through > 0
        self._disk_depth = self._count_rows()
        self._ram.extendleft(reversed(back))  # older than anything already in memory
        self._ram_bytes += sum(_cost(m) for m in back)
        self._enforce_ram_bound()
        self.disk.write_failed(self.path.name, describe_write_error(err))

    def _hold(self, messages: list[QueuedMessage]) -> None:
        for message in messages:
            self._ram.append(message)
            self._ram_bytes += _cost(message)
        self._enforce_ram_bound()

    def _enforce_ram_bound(self) -> None:
        """Drop the oldest messages not yet sent until memory is within its bound (never the
        newest one: a message larger than the whole bound still waits alone)."""
        while self._ram_bytes > self.ram_max_bytes:
            index = 0
            while index < len(self._ram) and self._ram[index].id <= self._sent_through:
                index += 1
            if index >= len(self._ram) - 1:
                return  # only messages already sent (at most `inflight`) and the newest are left
            self._ram_bytes -= _cost(self._ram[index])
            del self._ram[index]
            self._dropped += 1

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
