"""What the agent queues upstream: readings the contract refuses never leave it."""

import json
from pathlib import Path

from contract import parse_upstream
from edge.queue import Outbox
from edge.stamps import Stamper
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
