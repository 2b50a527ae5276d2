"""Telemetry is filed at the time its readings stand for (issue 10 §4), on SQLite and PostgreSQL: a
sensor's points sent late (after an outage, or when the swinging door closes) come back from a
time-range query by when they were sampled, not by when they were sent (docs/fleet.md, "Telemetry
time")."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

BASE = datetime(2026, 11, 1, tzinfo=UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_points_sent_late_are_found_by_their_sample_time(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1)
    dev.birth(roles=["sensor"])
    sent_at = _ms(BASE + timedelta(hours=6, minutes=5))  # the link came back: six hours sent at once
    for hour in range(6):
        dev.send("telemetry", ts=sent_at, role="sensor", at_ms=_ms(BASE + timedelta(hours=hour)),
                 r={"pm25": 10.0 + hour})
    # a minute's aggregate: filed at the window's start
    dev.send("telemetry", ts=sent_at, role="sensor", at_ms=_ms(BASE + timedelta(hours=3, minutes=30)),
             r={"window_s": 60, "pm25_mean": 13.5})
    dev.send("telemetry", ts=sent_at, role="sim", r={"temp_c": 31.0})  # a reading of now: at its ts
    dev.send("telemetry", ts=None, role="sensor", at_ms=_ms(BASE), r={"pm25": 99.0})  # clock unknown: arrival

    async def all_in() -> list[dict[str, Any]] | None:
        response = await fleet.get(f"/api/devices/{device_id}/telemetry")
        rows = response.json() if response.status_code == 200 else []
        return rows if len(rows) == 9 else None

    rows = await async_wait_for(all_in, what="telemetry stored")
    points = [r for r in rows if r["role"] == "sensor" and "pm25" in r["readings"]]
    assert [r["readings"]["pm25"] for r in points] == [10, 11, 12, 13, 14, 15, 99]  # oldest first
    for hour, row in enumerate(points[:6]):
        assert _utc(row["at"]) == BASE + timedelta(hours=hour)
        assert row["device_ts"] == sent_at  # when it was sent stays on the row
        assert row["readings"] == {"pm25": 10.0 + hour}  # the time is not a reading
    assert _utc(points[6]["at"]) > BASE + timedelta(days=1)  # the arrival (now), not the unset clock's time
    now_row = next(r for r in rows if r["role"] == "sim")
    assert _utc(now_row["at"]) == BASE + timedelta(hours=6, minutes=5)

    window = await fleet.get(f"/api/devices/{device_id}/telemetry", params={
        "since": (BASE + timedelta(hours=2)).isoformat(), "until": (BASE + timedelta(hours=4)).isoformat()})
    assert [(r["readings"].get("pm25"), r["readings"].get("pm25_mean")) for r in window.json()] == [
        (12.0, None), (13.0, None), (None, 13.5)]
    dev.close()
