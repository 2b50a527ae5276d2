"""Streams and sequence numbers, the session counter file, reconnect delays."""

import random
from pathlib import Path

import pytest

from edge.backoff import Backoff
from edge.stamps import CLOCK_VALID_AFTER_MS, SessionCounter, Stamper


def test_session_counter_grows_across_starts_and_connections(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    first = SessionCounter(path).start()
    counter = SessionCounter(path)
    second = counter.start()
    connection = counter.next_session()
    assert (first.n, second.n) == (1, 2)
    assert first.ses < second.ses < connection
    assert SessionCounter(path).current == connection, "saved before it is used"


@pytest.mark.parametrize("content", ['{"ses": "x"}', "{not json", '{"ses": -1, "boots": 2}'])
def test_a_damaged_session_file_restarts_the_counter_above_any_old_value(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "session.json"
    path.write_text(content)
    boot = SessionCounter(path).start()
    assert boot.ses > 1_700_000_000, "seeded from the clock, so old (ses, seq) stamps are not reused"
    assert len(list(tmp_path.glob("session.json.corrupt-*"))) == 1, "kept for a post-mortem"
    assert SessionCounter(path).current == boot.ses


def test_each_stream_numbers_from_zero() -> None:
    stamper = Stamper(5, clock=lambda: None)
    taken = []
    for _ in range(3):
        taken.append(stamper.next_envelope())
        stamper.advance()
    stamper.open_stream(6)
    taken.append(stamper.next_envelope())
    assert [(e["ses"], e["seq"]) for e in taken] == [(5, 0), (5, 1), (5, 2), (6, 0)]
    assert all(e["v"] == 1 and e["ts"] is None for e in taken)


def test_presence_envelope_has_no_seq() -> None:
    stamper = Stamper(9, clock=lambda: CLOCK_VALID_AFTER_MS + 1)
    assert stamper.presence(10) == {"v": 1, "ses": 10, "ts": CLOCK_VALID_AFTER_MS + 1}


def test_backoff_grows_stays_under_its_cap_and_resets() -> None:
    backoff = Backoff(0.5, 8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(40)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert delays[0] <= 0.5
    assert max(delays[-10:]) > 4.0, "it reaches the cap region"
    backoff.reset()
    assert backoff.next_delay() <= 0.5
