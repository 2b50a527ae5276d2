"""Speakers' clock offsets (issue 12, docs/broadcasts.md "Clock offsets"): samples from the real ingest,
the estimate, the flag, set_time sent once through a real Mosquitto to a device, its answer's skew."""

import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.broadcast import clocks
from fleet.broadcast.models import DeviceClock
from fleet.db import database
from fleet.models import Command
from fleet.settings import Settings
from tests.fleet.broadcast_kit import Speaker, ingest, later
from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[None]:
    async with database(Settings(database_url=database_url)):
        yield


def test_the_estimate_is_the_largest_sample_once_there_are_three() -> None:
    assert clocks.estimate([]) is None and clocks.estimate([5, 7]) is None
    assert clocks.estimate([-900, 40, 12]) == 40
    assert clocks.corrected_ms(10_000, 400) == 9_600 and clocks.corrected_ms(10_000, None) == 10_000


async def test_samples_from_a_speakers_messages_keep_the_last_twenty(db: None) -> None:
    spk = Speaker(offset_ms=-3000)  # 3 s behind
    await ingest([spk.birth(T0)], later(T0, seconds=0.01))
    row = await DeviceClock.get(device_id=spk.device_id)
    assert row.samples == [-3010] and row.offset_ms is None  # one sample: no estimate yet
    # 25 messages in one batch: delays of 10..250 ms, one queued for a minute
    batch, delays = [], []
    for i in range(25):
        sent = later(T0, seconds=i)
        batch.append(spk.health(sent))
        delays.append(ms_between(sent, later(T0, seconds=30)))
    await ingest(batch, later(T0, seconds=30))
    row = await DeviceClock.get(device_id=spk.device_id)
    assert len(row.samples) == clocks.SAMPLES_KEPT
    assert row.samples == [-3000 - d for d in delays[-20:]]
    assert row.offset_ms == max(row.samples) == -3000 - delays[-1]


def ms_between(a: datetime, b: datetime) -> int:
    return round((b - a).total_seconds() * 1000)


async def test_other_devices_are_not_tracked_and_retained_births_are_no_sample(db: None) -> None:
    sensor = Speaker(kind="pi")
    await ingest([sensor.birth(T0, roles=("sim",)), sensor.health(T0)], T0)
    assert await DeviceClock.filter(device_id=sensor.device_id).count() == 0
    spk = Speaker()
    await ingest([spk.birth(T0)], T0)
    await ingest([spk.health(later(T0, seconds=1))], later(T0, seconds=1))
    old = dataclasses.replace(spk.birth(later(T0, hours=-5)), retained=True)  # the broker replays it
    await ingest([old], later(T0, seconds=2))
    assert (await DeviceClock.get(device_id=spk.device_id)).samples == [0, 0]


async def test_flag_above_the_bound_and_cleared_below(db: None) -> None:
    fast = Speaker(offset_ms=900)
    good = Speaker(offset_ms=100)
    for spk in (fast, good):
        await ingest([spk.birth(T0), spk.health(T0), spk.health(T0)], T0)
    await clocks.flag(500)
    flags = {r.device_id: (r.offset_ms, r.flagged) for r in await DeviceClock.all()}
    assert flags[fast.device_id] == (900, True) and flags[good.device_id] == (100, False)
    await clocks.flag(1000)
    assert not (await DeviceClock.get(device_id=fast.device_id)).flagged


async def _clock(http: httpx.AsyncClient, device_id: str) -> dict[str, Any] | None:
    response = await http.get("/api/speakers/clocks", params={"device": device_id})
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()
    return rows[0] if rows else None


# the bound here is 10 s, the clock a minute ahead: the ingest's own wait counts as the network's
# delay in a sample, and on a loaded test machine it reaches seconds
BOUND_MS = 10_000


@pytest.fixture
async def fleet(database_url: str, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with running_fleet(fleet_settings(database_url, mosquitto.url, clock_offset_max_ms=BOUND_MS)) as http:
        yield http


async def test_a_speaker_off_by_a_minute_is_flagged_sent_the_time_once_and_its_skew_recorded(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    worker = fleet.app.state.runtime.broadcasts  # type: ignore[attr-defined]
    device = ScriptedDevice(mosquitto.port, device_id, ses=1, will=False)
    ahead = 60_000

    def stamp() -> int:
        return time.time_ns() // 1_000_000 + ahead

    try:
        device.birth(kind="esp32", roles=["speaker"], ts=stamp())
        for _ in range(4):
            device.health(ts=stamp())

        async def flagged() -> dict[str, Any] | None:
            clock = await _clock(fleet, device_id)
            return clock if clock and clock["flagged"] and clock["set_time_at"] else None

        clock = await async_wait_for(flagged, what="the clock flagged and set_time sent", timeout=60)
        assert ahead - BOUND_MS < clock["offset_ms"] <= ahead and clock["samples"] >= 3

        def set_times() -> list[dict[str, Any]]:
            return [body for topic, body in device.received if topic.endswith("/cmd") and body["name"] == "set_time"]

        async def at_device() -> list[dict[str, Any]] | None:
            return set_times() or None

        command = (await async_wait_for(at_device, what="set_time at the device", timeout=60))[0]
        assert abs(command["args"]["unix_ms"] - time.time_ns() // 1_000_000) < 60_000
        # more messages, more turns of the worker: no second set_time within SET_TIME_EVERY
        device.health(ts=stamp())
        keeper = next(tick.__self__ for name, tick in worker.parts if name == "clocks")
        assert isinstance(keeper, clocks.ClockKeeper)
        for _ in range(3):
            assert await keeper.send_time(datetime.now(UTC)) == 0  # still flagged, but sent lately
            await worker.turn()
        assert await Command.filter(device_id=device_id, name="set_time").count() == 1
        # the node sets its clock and answers how far it moved
        device.send("cmd/result", id=command["id"], status="ok", detail={"skew_ms": -ahead}, ts=stamp() - ahead)

        async def answered() -> dict[str, Any] | None:
            clock = await _clock(fleet, device_id)
            return clock if clock and clock["set_time_skew_ms"] is not None else None

        clock = await async_wait_for(answered, what="the skew recorded", timeout=60)
        assert clock["set_time_skew_ms"] == -ahead and clock["samples"] == 1  # reset: the answer's own stamp
        ahead = 0
        for _ in range(3):
            device.health(ts=stamp())

        async def cleared() -> dict[str, Any] | None:
            clock = await _clock(fleet, device_id)
            return clock if clock and clock["samples"] >= 4 and not clock["flagged"] else None

        clock = await async_wait_for(cleared, what="the flag cleared", timeout=60)
        assert abs(clock["offset_ms"]) <= BOUND_MS
        listed = await fleet.get("/api/speakers/clocks", params={"flagged": "false", "limit": 5})
        assert listed.status_code == 200 and int(listed.headers["X-Total-Count"]) >= 1
        assert (await fleet.get("/api/speakers/clocks", params={"device": "-bad"})).status_code == 422
    finally:
        device.close()


async def test_set_time_is_for_online_esp32_speakers_only(db: None) -> None:
    pi = Speaker(kind="pi", offset_ms=5000)
    await ingest([pi.birth(T0), pi.health(T0), pi.health(T0)], T0)
    await clocks.flag(500)
    keeper = clocks.ClockKeeper.__new__(clocks.ClockKeeper)  # no link needed: nothing is due
    assert await keeper.send_time(later(T0, minutes=1)) == 0
    assert (await DeviceClock.get(device_id=pi.device_id)).flagged
    assert await Command.filter(device_id=pi.device_id).count() == 0
    assert timedelta(minutes=10) == clocks.SET_TIME_EVERY
