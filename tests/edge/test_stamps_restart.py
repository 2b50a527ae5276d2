"""The session counter when session.json is lost, and the birth's stream fields (issue 9 §3, §5)."""

import json
from pathlib import Path

import pytest

from edge.queue import Outbox
from edge.stamps import SessionCounter, Stamper, highest_queued_ses, restart_value


def test_a_missing_counter_restarts_at_a_random_48_bit_value_not_at_0(tmp_path: Path) -> None:
    starts = set()
    for n in range(20):
        counter = SessionCounter(tmp_path / f"{n}" / "session.json")
        assert counter.restarted
        starts.add(counter.current)
    assert len(starts) == 20 and all(2**47 <= s < 2**48 for s in starts)


@pytest.mark.parametrize("content", ['{"ses": 4, "bo', "[1, 2]", '{"ses": 4}', '{"ses": true, "boots": 1}'])
def test_a_damaged_counter_restarts_the_same_way_whatever_the_clock(tmp_path: Path, content: str) -> None:
    path = tmp_path / "session.json"
    path.write_text(content)
    counter = SessionCounter(path)
    assert counter.restarted and 2**47 <= counter.current < 2**48
    boot = counter.start()
    assert (boot.n, boot.ses) == (1, counter.current)
    assert json.loads(path.read_text()) == {"ses": boot.ses, "boots": 1}


def test_a_kept_counter_is_not_restarted(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    path.write_text('{"ses": 41, "boots": 7}')
    counter = SessionCounter(path)
    counter.keep_above(None)
    assert not counter.restarted and counter.start().ses == 42


def test_a_restart_stays_above_the_streams_still_queued(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", max_messages=100)
    high = 2**48 + 5  # above any random restart: the queue must win
    for ses, seq in [(high - 1, 0), (high, 0), (high, 1), (3, 0)]:
        outbox.append("ioc/v1/d/t-x/health", json.dumps({"v": 1, "ses": ses, "seq": seq}).encode())
    outbox.append("ioc/v1/d/t-x/health", b"not json")
    assert highest_queued_ses(outbox, page=2) == high, "read page by page, every message"
    counter = SessionCounter(tmp_path / "session.json")
    counter.keep_above(highest_queued_ses(outbox))
    assert counter.start().ses == high + 1
    outbox.close()


def test_an_empty_queue_is_no_floor(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", max_messages=100)
    assert highest_queued_ses(outbox) is None
    outbox.close()


def test_restart_values_have_48_bits_with_the_top_one_set() -> None:
    assert all(2**47 <= restart_value() < 2**48 for _ in range(100))


def test_a_birth_says_where_the_stream_before_it_ended() -> None:
    stamper = Stamper(2**47 + 1, clock=lambda: None)
    assert stamper.stream_fields() == {"next_seq": 0}, "no stream before the boot stream"
    for _ in range(3):
        stamper.next_envelope()
        stamper.advance()
    stamper.open_stream(2**47 + 2)
    assert stamper.stream_fields() == {"next_seq": 0, "prev": {"ses": 2**47 + 1, "next_seq": 3}}
    stamper.open_stream(2**47 + 3)  # a connection that stamped nothing
    assert stamper.stream_fields()["prev"] == {"ses": 2**47 + 2, "next_seq": 0}
