"""The queue, the stream counter and the state files on a real full file system (a tmpfs filled
to the last byte; needs root), without an agent around them: issue 9 §2 piece by piece."""

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.queue import RAM_OVERHEAD, Outbox
from edge.stamps import SessionCounter
from edge.statefile import RESERVE_FILE, StateDisk, write_json
from tests.edge.small_disk import fill, small_disk, unfill

TOPIC = "ioc/v1/d/t-queue/telemetry"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "state") as folder:
        yield folder


def numbers(outbox: Outbox) -> list[int]:
    return [int(m.payload) for m in outbox.peek(1_000_000)]


def fill_until_memory(outbox: Outbox, start: int) -> int:
    """Append numbered messages until one waits in memory (the disk refused a commit); the next number."""
    n = start
    while not outbox.in_memory:
        outbox.append(TOPIC, str(n).encode())
        n += 1
        assert n < start + 100_000, "the full disk never refused a write"
    return n


def test_a_failed_commit_keeps_the_messages_their_ids_and_true_counters(disk: Path) -> None:
    outbox = Outbox(disk / "q.sqlite3", max_messages=100_000)
    for n in range(50):
        outbox.append(TOPIC, str(n).encode())
    head = outbox.peek(10)
    outbox.ack_through(head[-1].id)  # 10 acknowledged, 40 in the file
    fill(disk)
    n = fill_until_memory(outbox, 50)
    for k in range(n, n + 20):
        outbox.append(TOPIC, str(k).encode())
    n += 20

    assert outbox.disk.full
    assert numbers(outbox) == list(range(10, n)), "nothing lost, in order"
    ids = [m.id for m in outbox.peek(1_000_000)]
    assert ids == sorted(set(ids)), "no id handed out twice"
    assert outbox.depth == n - 10
    on_disk = sqlite3.connect(disk / "q.sqlite3").execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert outbox.depth == on_disk + outbox.in_memory, "depth counts what is really kept"

    # acknowledged while full: the file's rows and those in memory
    outbox.ack_through(outbox.peek(n)[-1].id)
    assert outbox.depth == 0 and outbox.empty.is_set()
    outbox.append(TOPIC, str(n).encode())
    unfill(disk)
    assert outbox.resume() == 1
    outbox.disk.recovered("test")
    outbox.append(TOPIC, str(n + 1).encode())
    outbox.close()
    reopened = Outbox(disk / "q.sqlite3", max_messages=100_000)
    assert numbers(reopened) == [n, n + 1], "acknowledged rows deleted, the rest stored in order"
    assert reopened.dropped == 0
    reopened.close()


def bounded_outbox(disk: Path, state: StateDisk | None = None) -> Outbox:
    """A queue whose memory holds 20 messages of `padded(n)`; 0 and 1 sent, 100 appended while full."""
    bound = 20 * (len(TOPIC) + len(padded(0)) + RAM_OVERHEAD)
    outbox = Outbox(disk / "q.sqlite3", max_messages=100_000, ram_max_bytes=bound, disk=state)
    fill(disk)
    outbox.disk.write_failed("test", "full")  # what any failed write does
    for n in range(5):
        outbox.append(TOPIC, padded(n))
    outbox.sent(outbox.peek(2)[-1].id)  # 0 and 1 went to the broker: they may have arrived
    for n in range(5, 100):
        outbox.append(TOPIC, padded(n))
    return outbox


def padded(n: int) -> bytes:
    return f"{n:0100d}".encode()


def test_memory_is_bounded_and_what_it_drops_is_counted(disk: Path) -> None:
    state = StateDisk(disk)
    state.prepare()
    outbox = bounded_outbox(disk, state)  # entering the full state gave the reserve back
    assert numbers(outbox) == [0, 1, *range(82, 100)], "the oldest not yet sent are dropped, never the sent ones"
    assert outbox.dropped == 80 and outbox.depth == 20

    assert outbox.close() == 0, "at the stop, what memory holds is stored in the reserve's room"
    reopened = Outbox(disk / "q.sqlite3", max_messages=100_000)
    assert numbers(reopened) == [0, 1, *range(82, 100)]
    assert reopened.dropped == 80, "and the count with it"
    reopened.close()


def test_with_no_byte_writable_the_stop_counts_what_memory_held(disk: Path) -> None:
    outbox = bounded_outbox(disk)  # no reserve: nothing at all can be written
    assert outbox.close() == 20
    assert outbox.dropped == 100 and outbox.depth == 0
    unfill(disk)
    reopened = Outbox(disk / "q.sqlite3", max_messages=100_000)
    # The file could not take the count either: the fleet sees these as gaps in their streams.
    assert reopened.depth == 0 and reopened.dropped == 0
    reopened.close()


def test_space_returning_moves_memory_into_the_file_in_order(disk: Path) -> None:
    path = disk / "q.sqlite3"
    outbox = Outbox(path, max_messages=100_000)
    fill(disk)
    n = fill_until_memory(outbox, 0)
    for k in range(n, n + 1200):  # more than one transaction's worth
        outbox.append(TOPIC, str(k).encode())
    in_memory = outbox.in_memory
    assert outbox.resume() is None, "no room yet: everything stays in memory"
    assert outbox.in_memory == in_memory
    unfill(disk)
    assert outbox.resume() == in_memory
    assert outbox.in_memory == 0
    outbox.close()
    reopened = Outbox(path, max_messages=100_000)
    assert numbers(reopened) == list(range(n + 1200))
    reopened.close()


def test_a_full_disk_at_start_opens_the_queue_and_the_counter(disk: Path) -> None:
    path = disk / "q.sqlite3"
    outbox = Outbox(path, max_messages=100)
    for n in range(3):
        outbox.append(TOPIC, str(n).encode())
    outbox.close()  # a clean close removes -wal and -shm
    counter = SessionCounter(disk / "session.json")
    first = counter.start()
    assert fill(disk) == 0

    state = StateDisk(disk)
    state.prepare()
    assert state.full, "no room for the reserve: full from the start"
    counter = SessionCounter(disk / "session.json")
    second = counter.start()  # overwritten in place
    attempt = counter.next_session()
    assert first.ses < second.ses < attempt
    assert SessionCounter(disk / "session.json").current == attempt, "recorded"
    reopened = Outbox(path, max_messages=100, disk=state)
    assert reopened.exclusive, "no room for SQLite's shared-memory file"
    assert numbers(reopened) == [0, 1, 2]
    reopened.append(TOPIC, b"3")
    assert reopened.in_memory == 1
    reopened.close()


def test_the_reserve_is_given_back_when_the_disk_fills(disk: Path) -> None:
    state = StateDisk(disk)
    state.prepare()
    assert not state.full and (disk / RESERVE_FILE).stat().st_size == state.reserve_bytes
    fill(disk)
    assert not state.save_json(disk / "commands.json", [{"id": "c-1", "status": "ok"}]), "no room"
    assert state.full and not (disk / RESERVE_FILE).exists(), "the failed write gave the reserve back"
    assert state.free_bytes() >= state.reserve_bytes
    assert state.save_json(disk / "commands.json", [{"id": "c-1", "status": "ok"}]), "the reserve's room is used"
    assert not state.room_to_resume(), "the reserve cannot be taken back yet"
    unfill(disk)
    assert state.room_to_resume() and (disk / RESERVE_FILE).exists()
    state.recovered("test")
    assert not state.full


def test_the_counter_file_is_overwritten_in_place_only_when_full(disk: Path) -> None:
    path = disk / "session.json"
    write_json(path, {"ses": 1, "boots": 1})
    fill(disk)
    with pytest.raises(Exception, match="No space left"):
        write_json(path, {"ses": 2, "boots": 1})
    assert json.loads(path.read_text()) == {"ses": 1, "boots": 1}, "an atomic write changes nothing"
    write_json(path, {"ses": 2, "boots": 1}, in_place_when_full=True)
    assert json.loads(path.read_text()) == {"ses": 2, "boots": 1}
    assert not path.with_name("session.json.tmp").exists()
