"""History series (fleet/ops/history.py) on SQLite and PostgreSQL: raw rows aggregated by the
database into buckets, hourly aggregates beyond, both added up where they meet; fields; the bounds."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from fleet.db import database
from fleet.models import HealthRecord, TelemetryRecord
from fleet.ops import history
from fleet.ops.history import HistoryError, Point, fields, series
from fleet.ops.models import HealthHourly, TelemetryHourly
from fleet.settings import Settings

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[None]:
    async with database(Settings(database_url=database_url)):
        yield


def _health(seq: int, at: datetime, data: dict[str, object], device: str = "pi-h") -> HealthRecord:
    return HealthRecord(device_id=device, ses=1, seq=seq, received_at=at, data=data)


def _telemetry(seq: int, at: datetime, role: str, readings: dict[str, object]) -> TelemetryRecord:
    return TelemetryRecord(device_id="pi-h", ses=1, seq=seq, received_at=at, at=at, role=role, readings=readings)


async def test_series_adds_raw_and_hourly_per_bucket(db: None) -> None:
    # hourly aggregates for hours 0 and 1; raw rows in hours 1 (a late one), 2 and 3
    await HealthHourly.create(device_id="pi-h", hour=T0, messages=4,
                              figures={"temp_c": {"min": 40.0, "max": 50.0, "mean": 45.0, "n": 4}})
    await HealthHourly.create(device_id="pi-h", hour=T0 + timedelta(hours=1), messages=2,
                              figures={"temp_c": {"min": 41.0, "max": 43.0, "mean": 42.0, "n": 2}})
    await HealthRecord.bulk_create([
        _health(1, T0 + timedelta(hours=1, minutes=59), {"temp_c": 48, "roles": {"camera": {"fps": 12.5}}}),
        _health(2, T0 + timedelta(hours=2, minutes=10), {"temp_c": 50.5, "ok": True}),
        _health(3, T0 + timedelta(hours=2, minutes=50), {"temp_c": 51.5, "roles": {"camera": {"fps": 7}}}),
        _health(4, T0 + timedelta(hours=3), {"temp_c": "hot", "roles": {"camera": {"fps": True}}}),
        _health(5, T0 + timedelta(hours=3, minutes=1), {"temp_c": 60}, device="other"),
    ])
    # 4 buckets of one hour: hour 1 mixes the hourly row with the late raw row
    got = await series("pi-h", "health", "temp_c", T0, T0 + timedelta(hours=4), 4)
    assert got == [
        Point(at=T0, min=40.0, max=50.0, mean=45.0, n=4),
        Point(at=T0 + timedelta(hours=1), min=41.0, max=48.0, mean=(42.0 * 2 + 48) / 3, n=3),
        Point(at=T0 + timedelta(hours=2), min=50.5, max=51.5, mean=51.0, n=2),
    ]
    # 2 buckets of two hours
    got = await series("pi-h", "health", "temp_c", T0, T0 + timedelta(hours=4), 2)
    assert [(p.at, p.min, p.max, p.n) for p in got] == [(T0, 40.0, 50.0, 7), (T0 + timedelta(hours=2), 50.5, 51.5, 2)]
    got = await series("pi-h", "health", "roles.camera.fps", T0 + timedelta(hours=1, minutes=30),
                       T0 + timedelta(hours=3, minutes=30), 1)
    assert got == [Point(at=T0 + timedelta(hours=1, minutes=30), min=7.0, max=12.5, mean=9.75, n=2)]
    assert await series("pi-h", "health", "ok", T0, T0 + timedelta(hours=4), 4) == []  # a bool is no number
    assert await fields("pi-h", "health") == ["roles.camera.fps", "temp_c"]
    assert await fields("nobody", "health") == []


async def test_telemetry_by_role(db: None) -> None:
    await TelemetryRecord.bulk_create([
        _telemetry(1, T0 + timedelta(minutes=1), "sensor", {"pm25": 10, "pm10": 20}),
        _telemetry(2, T0 + timedelta(minutes=2), "sensor", {"pm25": 14}),
        _telemetry(3, T0 + timedelta(minutes=3), "sim", {"pm25": 100, "temp_c": 31.2}),
    ])
    await TelemetryHourly.create(device_id="pi-h", role="sensor", hour=T0 - timedelta(hours=1), messages=1,
                                 figures={"pm25": {"min": 3.0, "max": 3.0, "mean": 3.0, "n": 1}})
    span = (T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    got = await series("pi-h", "telemetry", "pm25", *span, 2, role="sensor")
    assert got == [Point(at=span[0], min=3.0, max=3.0, mean=3.0, n=1), Point(at=T0, min=10.0, max=14.0, mean=12.0, n=2)]
    got = await series("pi-h", "telemetry", "pm25", *span, 1)
    assert got == [Point(at=span[0], min=3.0, max=100.0, mean=(3 + 10 + 14 + 100) / 4, n=4)]
    assert await fields("pi-h", "telemetry", role="sensor") == ["pm10", "pm25"]
    assert await fields("pi-h", "telemetry") == ["pm10", "pm25", "temp_c"]


async def test_bounds(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    await HealthRecord.bulk_create([_health(i, T0 + timedelta(minutes=i), {"temp_c": i}) for i in range(10)])
    # at the bound the newest rows of the range are the ones charted
    monkeypatch.setattr(history, "RAW_ROWS_MAX", 4)
    got = await series("pi-h", "health", "temp_c", T0, T0 + timedelta(hours=1), 1)
    assert got == [Point(at=T0, min=6.0, max=9.0, mean=7.5, n=4)]
    for bad in ("", "a..b", "a b", ".".join("abcdefg"), "x" * 65):
        with pytest.raises(HistoryError):
            await series("pi-h", "health", bad, T0, T0 + timedelta(hours=1), 1)
    with pytest.raises(HistoryError):
        await series("pi-h", "health", "temp_c", T0, T0, 1)
    with pytest.raises(HistoryError):
        await series("pi-h", "health", "temp_c", T0, T0 + timedelta(hours=1), 0)
    with pytest.raises(HistoryError):
        await series("pi-h", "health", "temp_c", T0.replace(tzinfo=None), T0 + timedelta(hours=1), 10)
