"""Retention (fleet/ops/retention.py) on SQLite and PostgreSQL: raw health and telemetry rolled up
into exact hourly aggregates and deleted, late rows merged, hourly rows and old events, presence
changes and resolved alerts deleted after their windows, a second run changing nothing, the bounds
and a backlog caught up over runs, two instances at once counting every row once."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pydantic import ValidationError

from fleet.db import database
from fleet.ingest.stats import IngestStats
from fleet.models import EventRecord, HealthRecord, TelemetryRecord
from fleet.ops import retention
from fleet.ops.history import series
from fleet.ops.models import (
    Alert,
    AlertEvent,
    AlertRule,
    AlertState,
    HealthHourly,
    Notification,
    NotificationChannel,
    PresenceChange,
    TelemetryHourly,
)
from fleet.ops.retention import Retention
from fleet.ops.service import build
from fleet.settings import Settings

H0 = datetime(2026, 3, 1, 10, tzinfo=UTC)  # an hour rolled up
NOW = H0 + timedelta(days=14, hours=2, minutes=30)  # raw cutoff: H0 + 2 h


@pytest.fixture
async def settings(database_url: str) -> AsyncIterator[Settings]:
    settings = Settings(database_url=database_url, retention_raw_days=14, retention_hourly_days=30,
                        retention_events_days=7, retention_presence_days=10, retention_alerts_days=20)
    async with database(settings):
        yield settings


_seq = iter(range(1, 10**6))


def health(at: datetime, data: dict[str, Any], device: str = "pi-r") -> HealthRecord:
    return HealthRecord(device_id=device, ses=1, seq=next(_seq), received_at=at, data=data)


def telemetry(at: datetime, role: str, readings: dict[str, Any]) -> TelemetryRecord:
    # arrived now, stands for `at` (a replay): retention goes by `at`
    return TelemetryRecord(device_id="pi-r", ses=1, seq=next(_seq), received_at=NOW, at=at, role=role,
                           readings=readings)


async def hourly() -> list[tuple[Any, ...]]:
    health_rows = await HealthHourly.all().order_by("device_id", "hour").values_list(
        "device_id", "hour", "figures", "messages")
    telemetry_rows = await TelemetryHourly.all().order_by("device_id", "role", "hour").values_list(
        "device_id", "role", "hour", "figures", "messages")
    return [*health_rows, *telemetry_rows]


def fig(low: float, high: float, mean: float, n: int) -> dict[str, float]:
    return {"min": low, "max": high, "mean": mean, "n": n}


async def test_roll_up_then_delete(settings: Settings) -> None:
    await HealthRecord.bulk_create([
        health(H0 + timedelta(minutes=1), {"temp_c": 40, "roles": {"camera": {"fps": 12.5}}, "fw": "1.0"}),
        health(H0 + timedelta(minutes=20), {"temp_c": 42.5, "safe_mode": True}),
        health(H0 + timedelta(minutes=59, seconds=59), {"temp_c": 46.5, "roles": {"camera": {"fps": 7.5}}}),
        health(H0 + timedelta(hours=1, minutes=5), {"temp_c": "n/a"}),  # a message with no number
        health(H0 + timedelta(hours=2), {"temp_c": 50}),  # at the cutoff: stays raw
        health(H0 + timedelta(minutes=30), {"temp_c": 99}, device="esp-r"),
    ])
    await TelemetryRecord.bulk_create([
        telemetry(H0 + timedelta(minutes=5), "sensor", {"pm25": 10, "pm10": 20}),
        telemetry(H0 + timedelta(minutes=6), "sensor", {"pm25": 13}),
        telemetry(H0 + timedelta(minutes=7), "sim", {"pm25": 100}),
        telemetry(H0 + timedelta(hours=3), "sensor", {"pm25": 1}),  # young
    ])
    span = (H0, H0 + timedelta(hours=3))
    before = await series("pi-r", "health", "temp_c", *span, 3)

    part = Retention(settings)
    await part.tick(NOW)
    assert await hourly() == [
        ("esp-r", H0, {"temp_c": fig(99, 99, 99, 1)}, 1),
        ("pi-r", H0, {"temp_c": fig(40, 46.5, 43, 3), "roles.camera.fps": fig(7.5, 12.5, 10, 2)}, 3),
        ("pi-r", H0 + timedelta(hours=1), {}, 1),
        ("pi-r", "sensor", H0, {"pm25": fig(10, 13, 11.5, 2), "pm10": fig(20, 20, 20, 1)}, 2),
        ("pi-r", "sim", H0, {"pm25": fig(100, 100, 100, 1)}, 1),
    ]
    assert await HealthRecord.all().values_list("received_at", flat=True) == [H0 + timedelta(hours=2)]
    assert await TelemetryRecord.all().values_list("at", flat=True) == [H0 + timedelta(hours=3)]
    # the chart reads the same figures from the aggregates as it did from the raw rows
    after = await series("pi-r", "health", "temp_c", *span, 3)
    assert [(p.at, p.min, p.max, p.n) for p in after] == [(p.at, p.min, p.max, p.n) for p in before]
    assert [p.mean for p in after] == pytest.approx([p.mean for p in before])

    # a second run (its own schedule: not before FLEET_RETENTION_EVERY_S) changes nothing
    kept = await hourly()
    await part.tick(NOW + timedelta(seconds=1))
    assert part.next_run == NOW + timedelta(seconds=settings.retention_every_s)
    await part.tick(part.next_run)
    assert await hourly() == kept

    # a late row for an hour already rolled up is merged into it, never counted twice
    await HealthRecord.bulk_create([health(H0 + timedelta(minutes=45), {"temp_c": 43})])
    await part.run(NOW)
    await part.run(NOW)
    assert (await HealthHourly.get(device_id="pi-r", hour=H0)).figures["temp_c"] == fig(40, 46.5, 43, 4)
    assert (await HealthHourly.get(device_id="pi-r", hour=H0)).messages == 4

    # hourly rows go after FLEET_RETENTION_HOURLY_DAYS (30): the hour of H0 + 2 h is rolled up then
    report = await part.run(H0 + timedelta(days=30, hours=1, minutes=1))
    assert report.deleted["health_hourly"] == 2 and report.deleted["telemetry_hourly"] == 2
    assert await hourly() == [
        ("pi-r", H0 + timedelta(hours=1), {}, 1),
        ("pi-r", H0 + timedelta(hours=2), {"temp_c": fig(50, 50, 50, 1)}, 1),
        ("pi-r", "sensor", H0 + timedelta(hours=3), {"pm25": fig(1, 1, 1, 1)}, 1),
    ]
    assert await HealthRecord.all().count() == 0 and await TelemetryRecord.all().count() == 0


async def test_events_presence_and_alerts_after_their_windows(settings: Settings) -> None:
    await EventRecord.bulk_create([
        EventRecord(device_id="pi-r", ses=1, seq=n, received_at=NOW - timedelta(days=days), at=NOW, event_id=f"e{n}",
                    type="motion", phase="instant", category="security", data={})
        for n, days in enumerate([30, 8, 6, 1])])
    await PresenceChange.bulk_create([PresenceChange(device_id="pi-r", at=NOW - timedelta(days=days), online=True)
                                      for days in (11, 9)])
    rule = await AlertRule.create(name="off", kind="offline")

    async def alert(state: AlertState, resolved_days: float | None) -> Alert:
        resolved = None if resolved_days is None else NOW - timedelta(days=resolved_days)
        made = await Alert.create(rule=rule, kind="offline", device_id="pi-r", severity="major", state=state,
                                  summary="offline", raised_at=NOW - timedelta(days=60),
                                  last_true_at=NOW - timedelta(days=60), resolved_at=resolved)
        await AlertEvent.create(alert=made, at=NOW - timedelta(days=60), action="raised")
        return made

    old = await alert(AlertState.RESOLVED, 21)
    recent = await alert(AlertState.RESOLVED, 19)
    open_one = await alert(AlertState.OPEN, None)
    channel = await NotificationChannel.create(name="ops-mail", kind="email", target={"to": ["ops@example.org"]})
    await Notification.bulk_create([Notification(channel=channel, state="sent", created_at=NOW - timedelta(days=days))
                                    for days in (25, 21, 3)])
    report = await Retention(settings).run(NOW)
    assert report.deleted == {"health_hourly": 0, "telemetry_hourly": 0, "alert": 1, "relay_delivery": 0, "event": 2,
                              "presence_change": 1, "notification": 2, "snapshot": 0}
    assert await Notification.all().count() == 1
    assert sorted(await EventRecord.all().values_list("event_id", flat=True)) == ["e2", "e3"]  # type: ignore[comparison-overlap]
    assert await PresenceChange.all().count() == 1
    assert sorted(await Alert.all().values_list("id", flat=True)) == sorted([recent.id, open_one.id])
    assert not await AlertEvent.filter(alert_id=old.id).exists()
    assert await AlertEvent.all().count() == 2
    assert (await Retention(settings).run(NOW)).deleted == dict.fromkeys(report.deleted, 0)


async def test_bounds_backlog_and_two_instances(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "CHUNK_ROWS", 3)
    monkeypatch.setattr(retention, "ROWS_PER_RUN", 7)
    monkeypatch.setattr(retention, "DEVICES_PER_RUN", 2)
    monkeypatch.setattr(retention, "PRUNE_BATCH", 2)
    monkeypatch.setattr(retention, "PRUNE_BATCHES", 1)
    devices = [f"d{n}" for n in range(4)]
    await HealthRecord.bulk_create([health(H0 + timedelta(minutes=m), {"v": m}, device=d)
                                    for d in devices for m in range(10)])
    await PresenceChange.bulk_create([PresenceChange(device_id="d0", at=H0, online=True) for _ in range(3)])
    first = Retention(settings)
    report = await first.run(NOW)
    assert report.rolled["health"] == 7 and report.deleted["presence_change"] == 2 and report.more
    await first.tick(NOW)
    assert first.next_run == NOW  # a bound reached: again at the next turn
    # two instances at once, each with its own cursor, until nothing is left
    second = Retention(settings)
    for _ in range(20):
        reports = await asyncio.gather(first.run(NOW), second.run(NOW))
        if not any(r.more for r in reports):
            break
    assert await HealthRecord.all().count() == 0 and await PresenceChange.all().count() == 0
    for device in devices:
        row = await HealthHourly.get(device_id=device, hour=H0)
        assert (row.figures["v"], row.messages) == (fig(0, 9, 4.5, 10), 10)


def test_hourly_window_not_below_raw() -> None:
    with pytest.raises(ValidationError, match="FLEET_RETENTION_HOURLY_DAYS"):
        Settings(retention_raw_days=30, retention_hourly_days=10)


def test_runs_last_in_the_ops_worker() -> None:
    worker = build(cast(Any, None), Settings(), IngestStats())
    assert [name for name, _ in worker.parts][-1] == "retention"
