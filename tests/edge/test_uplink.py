"""What the agent queues upstream: readings the contract refuses never leave it."""

import json
from pathlib import Path

from contract import parse_upstream
from edge.queue import Outbox
from edge.stamps import CLOCK_VALID_AFTER_MS, Stamper
from edge.uplink import Uplink


def test_non_finite_readings_are_left_out_and_an_empty_report_is_not_sent(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", max_messages=10)
    uplink = Uplink("pi-test-1", Stamper(1, clock=lambda: 1_700_000_000_000), outbox)
    uplink.telemetry("sensor", {"pm25": float("nan"), "pm10": float("inf"), "t": float("-inf"),
                                "temp_c": 31.5, "count": 3})
    uplink.telemetry("sensor", {"pm25": float("nan")})  # nothing finite: nothing queued
    queued = outbox.peek(10)
    assert len(queued) == 1
    body = json.loads(queued[0].payload)
    assert body["r"] == {"temp_c": 31.5, "count": 3}
    assert parse_upstream(queued[0].topic, queued[0].payload).device_id == "pi-test-1"
    assert body["seq"] == 0  # the skipped report took no sequence number (no gap at the fleet)
    outbox.close()


def test_a_reading_taken_earlier_carries_its_own_time_while_the_clock_is_set(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", max_messages=10)
    now = CLOCK_VALID_AFTER_MS + 86_400_000
    uplink = Uplink("pi-test-1", Stamper(1, clock=lambda: now), outbox)
    uplink.telemetry("sensor", {"pm25": 12.0}, at_ms=now - 61_000)  # a point sent after its time
    uplink.telemetry("sensor", {"pm25": 13.0})  # a reading of now: ts says it
    uplink.telemetry("sensor", {"pm25": 14.0}, at_ms=1_000)  # from a clock not set yet: no time of its own
    bodies = [json.loads(m.payload) for m in outbox.peek(10)]
    assert [(b["ts"], b.get("at_ms"), b["r"]) for b in bodies] == [
        (now, now - 61_000, {"pm25": 12.0}), (now, None, {"pm25": 13.0}), (now, None, {"pm25": 14.0})]
    assert all(parse_upstream(m.topic, m.payload).body.get("at_ms") == b.get("at_ms")
               for m, b in zip(outbox.peek(10), bodies, strict=True))
    outbox.close()
