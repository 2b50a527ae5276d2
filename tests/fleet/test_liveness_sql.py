"""The verdict in SQL (fleet/ingest/silence.py) against the pure one (fleet/liveness.py), on SQLite
and PostgreSQL: `?state=` finds exactly the devices `judge` gives that state, and the sweep marks
exactly those it judges silent, at most SWEEP_BATCH per statement."""

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleet.db import database
from fleet.ingest import silence
from fleet.ingest.silence import state_filter, sweep_once, unix_ms
from fleet.liveness import Hearing, Reason, State, Timing, judge
from fleet.models import Device, DeviceStatus
from fleet.settings import Settings

TIMING = Timing(stale_after_periods=2, silent_after_periods=3)
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[None]:
    async with database(Settings(database_url=database_url)):
        yield


def _random_device(rng: random.Random, n: int) -> Device:
    seen = None if rng.random() < 0.1 else NOW - timedelta(seconds=rng.uniform(0, 400))
    died = None if rng.random() < 0.6 else NOW - timedelta(seconds=rng.uniform(0, 400))
    return Device(
        id=f"sql-{n:04d}",
        status=rng.choice([DeviceStatus.ACTIVE] * 6 + [DeviceStatus.DISCOVERED, DeviceStatus.REGISTERED,
                                                       DeviceStatus.DECOMMISSIONED]),
        online=rng.random() < 0.7,
        session=None if seen is None and rng.random() < 0.8 else rng.randrange(1, 100),
        last_seen_at=seen,
        last_seen_ms=None if seen is None else unix_ms(seen),
        health_period_s=rng.choice([1, 5, 10, 30, 60, 120]),
        last_death_at=died,
        last_death_reason=None if died is None else rng.choice(["lost", "shutdown"]),
        silenced_at=None if rng.random() < 0.7 else NOW - timedelta(seconds=rng.uniform(0, 400)),
    )


HEARINGS = [Hearing(None), Hearing(timedelta(seconds=5)), Hearing(timedelta(seconds=100)),
            Hearing(timedelta(hours=2))]


async def test_state_filter_finds_what_judge_says(db: None) -> None:
    rng = random.Random(9)
    await Device.bulk_create([_random_device(rng, n) for n in range(400)])
    devices = await Device.all()
    for hearing in HEARINGS:
        expected: dict[State, set[str]] = {state: set() for state in State}
        for device in devices:
            expected[judge(device, NOW, hearing, TIMING).state].add(device.id)
        assert sum(len(ids) for ids in expected.values()) == len(devices)
        for state in State:
            found = set(await state_filter(Device.all(), state, NOW, hearing, TIMING).values_list("id", flat=True))
            assert found == expected[state], (state, hearing)
    # enough of each to mean something (with the fleet hearing for 2 hours)
    hearing = HEARINGS[-1]
    counts = {s: sum(judge(d, NOW, hearing, TIMING).state is s for d in devices) for s in State}
    assert all(counts[s] >= 10 for s in State if s is not State.UNKNOWN), counts


async def test_the_sweep_marks_those_judged_silent_and_no_others(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(silence, "SWEEP_BATCH", 7)  # several statements in one sweep
    rng = random.Random(4)
    await Device.bulk_create([_random_device(rng, n) for n in range(300)])
    before = {d.id: d for d in await Device.all()}
    hearing = Hearing(timedelta(hours=2))
    silent = {i for i, d in before.items()
              if d.online and judge(d, NOW, hearing, TIMING) .reason is Reason.SILENT}
    assert len(silent) > 7 * 3
    assert await sweep_once(NOW, Hearing(None), TIMING) == []  # deaf: nothing
    marked = await sweep_once(NOW, hearing, TIMING)
    limit = silence.SWEEP_BATCH * silence.SWEEP_STATEMENTS
    assert len(marked) == min(len(silent), limit) and set(marked) <= silent
    while len(marked) < len(silent):  # the rest in the next sweeps
        more = await sweep_once(NOW, hearing, TIMING)
        assert more and not set(more) & set(marked)
        marked += more
    after = {d.id: d for d in await Device.all()}
    for device_id, device in after.items():
        if device_id in silent:
            assert not device.online and device.silenced_at == NOW
            assert judge(device, NOW, hearing, TIMING).reason is Reason.SILENT
        else:  # untouched, and judged as before
            assert (device.online, device.silenced_at) == (before[device_id].online, before[device_id].silenced_at)
            assert judge(device, NOW, hearing, TIMING) == judge(before[device_id], NOW, hearing, TIMING)
    assert await sweep_once(NOW, hearing, TIMING) == []
