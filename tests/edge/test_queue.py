"""The store-and-forward queue on a real SQLite file: order, persistence, the bound."""

import asyncio
from pathlib import Path

import pytest

from edge.queue import Outbox


def fill(outbox: Outbox, numbers: range) -> None:
    for n in numbers:
        outbox.append(f"t/{n}", str(n).encode())


def numbers_in(outbox: Outbox) -> list[int]:
    return [int(m.payload) for m in outbox.peek(1_000_000)]


def test_messages_come_out_in_the_order_they_went_in(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.sqlite3", max_messages=1000)
    fill(outbox, range(50))
    head = outbox.peek(10)
    assert [m.topic for m in head] == [f"t/{n}" for n in range(10)]
    assert outbox.ack_through(head[-1].id) == 10
    assert numbers_in(outbox) == list(range(10, 50))
    assert outbox.depth == 40


def test_peek_does_not_remove(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.sqlite3", max_messages=1000)
    fill(outbox, range(3))
    outbox.peek(3)
    assert numbers_in(outbox) == [0, 1, 2]


def test_unacknowledged_messages_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    outbox = Outbox(path, max_messages=1000)
    fill(outbox, range(20))
    outbox.ack_through(outbox.peek(5)[-1].id)
    outbox.peek(5)  # sent, but no PUBACK before the "crash"
    outbox.close()

    reopened = Outbox(path, max_messages=1000)
    assert reopened.depth == 15
    assert numbers_in(reopened) == list(range(5, 20))
    fill(reopened, range(20, 25))
    assert numbers_in(reopened) == list(range(5, 25)), "new messages go after the old ones"


async def test_appends_in_one_loop_turn_are_committed_together(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    outbox = Outbox(path, max_messages=100_000)
    fill(outbox, range(5000))
    await asyncio.sleep(0)  # the end of this turn commits
    other = Outbox(path, max_messages=100_000)  # a second connection sees committed data only
    assert other.depth == 5000
    other.close()
    outbox.close()


def test_full_queue_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    outbox = Outbox(path, max_messages=10)
    fill(outbox, range(25))
    assert outbox.depth == 10
    assert outbox.dropped == 15
    assert numbers_in(outbox) == list(range(15, 25))
    outbox.close()

    reopened = Outbox(path, max_messages=10)
    assert reopened.dropped == 15, "the dropped count is persistent"


def test_lowering_the_bound_trims_the_oldest_at_open(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    outbox = Outbox(path, max_messages=100)
    fill(outbox, range(30))
    outbox.close()
    smaller = Outbox(path, max_messages=12)
    assert numbers_in(smaller) == list(range(18, 30))
    assert smaller.dropped == 18


def test_a_corrupt_file_is_set_aside_and_an_empty_queue_starts(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    outbox = Outbox(path, max_messages=10)
    assert outbox.depth == 0
    fill(outbox, range(2))
    assert numbers_in(outbox) == [0, 1]
    assert len(list(tmp_path.glob("q.sqlite3.corrupt-*"))) == 1


async def test_events_follow_appends_and_the_depth(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.sqlite3", max_messages=10)
    assert outbox.empty.is_set() and not outbox.appended.is_set()
    fill(outbox, range(3))
    assert outbox.appended.is_set() and not outbox.empty.is_set()
    outbox.ack_through(outbox.peek(3)[-1].id)
    assert outbox.empty.is_set()


def test_peek_after_an_id_skips_what_was_already_sent(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "q.sqlite3", max_messages=100)
    fill(outbox, range(10))
    first = outbox.peek(4)
    rest = outbox.peek(100, after=first[-1].id)
    assert [int(m.payload) for m in rest] == list(range(4, 10))


def test_bound_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Outbox(tmp_path / "q.sqlite3", max_messages=0)
