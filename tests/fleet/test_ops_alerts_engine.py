"""The alert engine on a real database (SQLite and PostgreSQL): raise, keep, re-raise, resolve; one
live alert per (rule, device) even with two engines at once; silences; the facts each kind reads
from the tables (open events, gaps, playbacks, births, health trend, clock)."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleet.db import database
from fleet.ingest.silence import unix_ms
from fleet.liveness import Hearing, Timing
from fleet.models import Device, DeviceStatus, EventRecord, HealthRecord, SeqGap
from fleet.ops import alerts
from fleet.ops.engine import REOPEN_S, AlertEngine
from fleet.ops.models import Alert, AlertEvent, AlertRule, AlertState, PresenceChange
from fleet.ops.rules import BUILTINS
from fleet.settings import Settings

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[None]:
    async with database(Settings(database_url=database_url)):
        yield


def engine() -> AlertEngine:
    return AlertEngine(hearing=lambda: Hearing(timedelta(days=30)), timing=Timing())


async def device(device_id: str, kind: str, at: datetime, health: dict[str, Any] | None = None,
                 roles: list[str] | None = None, ward: str = "tan-phu") -> Device:
    return await Device.create(id=device_id, kind=kind, ward=ward, status=DeviceStatus.ACTIVE, online=True, session=7,
                               last_seen_at=at, last_seen_ms=unix_ms(at), health_period_s=60, roles=roles or [],
                               last_health=health or {}, last_health_at=at, birth={"kind": kind})


async def heard(device_id: str, at: datetime, health: dict[str, Any]) -> None:
    await Device.filter(id=device_id).update(last_seen_at=at, last_seen_ms=unix_ms(at), last_health=health,
                                             last_health_at=at, online=True)


async def live(device_id: str, kind: str) -> Alert | None:
    return await Alert.get_or_none(device_id=device_id, kind=kind, live_key__isnull=False)


async def actions(alert: Alert) -> list[tuple[str, str]]:
    return [(e.action, e.notify) for e in await AlertEvent.filter(alert_id=alert.id).order_by("id")]


async def test_raise_keep_reraise_resolve_and_builtins(db: None) -> None:
    work = engine()
    await device("pi-hot", "pi", T0, {"temp_c": 91.5, "disk_pct": 40})
    await work.tick(T0)
    assert await AlertRule.filter(builtin=True).count() == len(BUILTINS)
    assert await alerts.ensure_builtin_rules() == 0  # idempotent by name
    alert = await live("pi-hot", "temp_high")
    assert alert is not None and alert.state == AlertState.OPEN and alert.value == {"temp_c": 91.5, "max": 80.0}
    assert alert.ward == "tan-phu" and alert.severity == "major" and "temp_c 91.5" in alert.summary
    assert await actions(alert) == [("raised", "pending")]

    await heard("pi-hot", T0 + timedelta(seconds=30), {"temp_c": 93})
    await work.tick(T0 + timedelta(seconds=30))  # keeps the same alert, with the new figure
    alert = await Alert.get(id=alert.id)
    assert alert.value["temp_c"] == 93 and alert.last_true_at == T0 + timedelta(seconds=30)
    assert await Alert.filter(device_id="pi-hot").count() == 1

    await heard("pi-hot", T0 + timedelta(seconds=60), {"temp_c": 60})
    await work.tick(T0 + timedelta(seconds=60))
    alert = await Alert.get(id=alert.id)
    assert alert.state == AlertState.RESOLVED and alert.resolved_by is None and alert.live_key is None
    assert await actions(alert) == [("raised", "pending"), ("resolved", "pending")]

    # back within REOPEN_S: the same alert again, counted
    await heard("pi-hot", T0 + timedelta(seconds=90), {"temp_c": 85})
    await work.tick(T0 + timedelta(seconds=90))
    alert = await Alert.get(id=alert.id)
    assert alert.state == AlertState.OPEN and alert.count == 2 and alert.live_key is not None
    assert (await actions(alert))[-1] == ("reraised", "pending")

    # resolved, then back after REOPEN_S: a new alert
    await heard("pi-hot", T0 + timedelta(seconds=120), {"temp_c": 20})
    await work.tick(T0 + timedelta(seconds=120))
    later = T0 + timedelta(seconds=121 + REOPEN_S)
    await heard("pi-hot", later, {"temp_c": 99})
    await work.tick(later)
    fresh = await live("pi-hot", "temp_high")
    assert fresh is not None and fresh.id != alert.id and fresh.count == 1


async def test_offline_for_and_unknown_health(db: None) -> None:
    work = engine()
    await device("pi-gone", "pi", T0, {"temp_c": 95})
    await work.tick(T0)
    assert await live("pi-gone", "temp_high") is not None
    died = T0 + timedelta(seconds=10)
    await Device.filter(id="pi-gone").update(online=False, last_death_at=died, last_death_reason="lost")
    await work.tick(died + timedelta(seconds=200))  # offline 200 s < for_s 300
    assert await live("pi-gone", "offline") is None
    assert await live("pi-gone", "temp_high") is not None  # its health is old: left as it is, not resolved
    await work.tick(died + timedelta(seconds=301))
    down = await live("pi-gone", "offline")
    assert down is not None and down.value == {"since": died.isoformat(), "reason": "lost"}
    back = died + timedelta(seconds=400)
    await heard("pi-gone", back, {"temp_c": 40})
    await work.tick(back)
    assert await live("pi-gone", "offline") is None and await live("pi-gone", "temp_high") is None


async def test_two_engines_raise_one_alert(db: None) -> None:
    await device("esp-low", "esp32", T0, {"heap_free": 1200})
    first, second = engine(), engine()
    await first.tick(T0)  # seeds the rules
    await Alert.all().delete()
    await asyncio.gather(first.tick(T0 + timedelta(seconds=1)), second.tick(T0 + timedelta(seconds=1)))
    assert await Alert.filter(device_id="esp-low", kind="heap_low").count() == 1
    alert = await Alert.get(device_id="esp-low", kind="heap_low")
    assert await AlertEvent.filter(alert_id=alert.id, action="raised").count() == 1


async def test_silence_then_unsilence_and_lifecycle_refusals(db: None) -> None:
    work = engine()
    await device("pi-full", "pi", T0, {"disk_pct": 97})
    await work.tick(T0)
    alert = await live("pi-full", "disk_high")
    assert alert is not None
    with pytest.raises(alerts.AlertError, match="in the past"):
        await alerts.silence(alert.id, T0 - timedelta(minutes=1), "ops1", T0)
    silenced = await alerts.silence(alert.id, T0 + timedelta(minutes=10), "ops1", T0)
    assert silenced.silenced_by == "ops1"
    acked = await alerts.acknowledge(alert.id, "ops2", T0 + timedelta(seconds=5))
    assert acked.state == AlertState.ACKNOWLEDGED and acked.acknowledged_by == "ops2"
    with pytest.raises(alerts.AlertError, match="already acknowledged by ops2"):
        await alerts.acknowledge(alert.id, "ops1", T0 + timedelta(seconds=6))
    await heard("pi-full", T0 + timedelta(minutes=1), {"disk_pct": 50})
    await work.tick(T0 + timedelta(minutes=1))  # resolved while silenced: not notified
    alert = await Alert.get(id=alert.id)
    assert alert.state == AlertState.RESOLVED
    assert (await actions(alert))[-1] == ("resolved", "none")
    with pytest.raises(alerts.AlertError, match="resolved"):
        await alerts.acknowledge(alert.id, "ops1", T0 + timedelta(minutes=2))
    with pytest.raises(alerts.AlertError, match="already resolved"):
        await alerts.resolve(alert.id, "ops1", T0 + timedelta(minutes=2))
    with pytest.raises(alerts.AlertNotFound):
        await alerts.acknowledge(999_999, "ops1", T0)

    # back soon: re-raised, still silenced (not notified); the silence runs out: the engine ends it
    await heard("pi-full", T0 + timedelta(minutes=3), {"disk_pct": 99})
    await work.tick(T0 + timedelta(minutes=3))
    again = await live("pi-full", "disk_high")
    assert again is not None and again.id == alert.id and again.state == AlertState.OPEN
    assert (await actions(again))[-1] == ("reraised", "none")
    await alerts.silence(again.id, T0 + timedelta(minutes=5), "ops1", T0 + timedelta(minutes=3))
    await work.tick(T0 + timedelta(minutes=6))
    again = await Alert.get(id=again.id)
    assert again.silenced_until is None
    assert [a for a, _ in await actions(again)][-2:] == ["silenced", "unsilenced"]
    with pytest.raises(alerts.AlertError, match="not silenced"):
        await alerts.unsilence(again.id, "ops1", T0 + timedelta(minutes=6))
    manual = await alerts.resolve(again.id, "ops1", T0 + timedelta(minutes=7))
    assert manual.resolved_by == "ops1" and (await actions(again))[-1] == ("resolved", "none")


async def test_rule_disabled_or_out_of_scope_resolves(db: None) -> None:
    work = engine()
    await device("pi-warm", "pi", T0, {"mem_pct": 99})
    await work.tick(T0)
    alert = await live("pi-warm", "mem_high")
    assert alert is not None
    rule = await AlertRule.get(kind="mem_high")
    await alerts.update_rule(rule.id, {"ward": "other-ward"}, "ops1")
    await work.tick(T0 + timedelta(seconds=5))
    assert await live("pi-warm", "mem_high") is None
    await alerts.update_rule(rule.id, {"ward": None}, "ops1")
    await work.tick(T0 + timedelta(seconds=10))
    assert await live("pi-warm", "mem_high") is not None
    await alerts.update_rule(rule.id, {"enabled": False}, "ops1")
    await work.tick(T0 + timedelta(seconds=15))
    assert await live("pi-warm", "mem_high") is None
    with pytest.raises(alerts.AlertError, match="builtin"):
        await alerts.delete_rule(rule.id, "ops1")


async def _event(device_id: str, seq: int, at: datetime, event_id: str, type_: str, phase: str,
                 data: dict[str, Any] | None = None) -> None:
    await EventRecord.create(device_id=device_id, ses=7, seq=seq, device_ts=unix_ms(at), received_at=at, at=at,
                             event_id=event_id, type=type_, phase=phase, category="other", data=data or {})


async def test_facts_from_the_tables(db: None) -> None:
    """Each kind whose facts come from a table fires and clears on real rows."""
    work = engine()
    await device("esp-light", "esp32", T0, {"heap_free": 30000}, roles=["light"])
    await device("esp-sensor", "esp32", T0, {"heap_free": 30000}, roles=["sensor"])
    await device("pi-speaker", "pi", T0, {"queue": 5, "dropped": 0}, roles=["speaker"])
    await _event("esp-light", 1, T0 - timedelta(minutes=5), "lf-1", "lamp_failure", "start")
    await _event("esp-light", 2, T0 - timedelta(minutes=5), "db-1", "day_burning", "start")
    await _event("esp-sensor", 1, T0 - timedelta(minutes=2), "al-1", "alarm", "start")
    for n in range(3):
        await _event("pi-speaker", n + 1, T0 - timedelta(minutes=10 - n), f"pb-{n}", "playback", "end",
                     {"status": "failed", "reason": "busy"})
    await SeqGap.create(device_id="pi-speaker", ses=7, first_seq=10, last_seq=29, detected_at=T0 - timedelta(minutes=1))
    for n in range(3):
        await PresenceChange.create(device_id="esp-sensor", at=T0 - timedelta(minutes=n + 1), online=True,
                                    reason="birth")
    for n in range(6):
        await PresenceChange.create(device_id="esp-light", at=T0 - timedelta(minutes=n + 1), online=n % 2 == 0,
                                    reason="resumed" if n % 2 == 0 else "lost")
    await HealthRecord.create(device_id="pi-speaker", ses=7, seq=50, device_ts=unix_ms(T0 - timedelta(minutes=5)),
                              received_at=T0 - timedelta(minutes=5), data={"queue": 150, "dropped": 3})
    await heard("pi-speaker", T0, {"queue": 400, "dropped": 9})
    await HealthRecord.create(device_id="pi-speaker", ses=7, seq=51, device_ts=unix_ms(T0) - 45_000,
                              received_at=T0, data={"queue": 400, "dropped": 9})
    await work.tick(T0)
    found = {(a.device_id, a.kind) for a in await Alert.filter(live_key__isnull=False)}
    assert found == {("esp-light", "lamp_failure"), ("esp-light", "day_burning"), ("esp-light", "flapping"),
                     ("esp-sensor", "sensor_alarm"), ("esp-sensor", "crash_loop"),
                     ("pi-speaker", "speaker_playback_failed"), ("pi-speaker", "ingest_gaps"),
                     ("pi-speaker", "queue_growing"), ("pi-speaker", "dropped_rising"),
                     ("pi-speaker", "clock_drift")}
    assert (await live("pi-speaker", "queue_growing") or Alert()).value["earlier"] == 150
    gaps = await live("pi-speaker", "ingest_gaps")
    assert gaps is not None and gaps.value["missing"] == 20
    clock = await live("pi-speaker", "clock_drift")
    assert clock is not None and clock.value["offset_ms"] == 45_000

    # the conditions clear
    await _event("esp-light", 3, T0 + timedelta(minutes=1), "lf-1", "lamp_failure", "end")
    await _event("esp-sensor", 2, T0 + timedelta(minutes=1), "al-1", "alarm", "end")
    await SeqGap.filter(device_id="pi-speaker").update(open=False)
    later = T0 + timedelta(hours=2)
    for device_id in ("esp-light", "esp-sensor"):
        await heard(device_id, later, {"heap_free": 30000})
    await heard("pi-speaker", later, {"queue": 0, "dropped": 9})
    await HealthRecord.create(device_id="pi-speaker", ses=7, seq=52, device_ts=unix_ms(later) - 200,
                              received_at=later, data={"queue": 0, "dropped": 9})
    await work.tick(later)
    left = {(a.device_id, a.kind) for a in await Alert.filter(live_key__isnull=False)}
    assert left == {("esp-light", "day_burning")}


async def test_listing_and_groups_in_sql(db: None) -> None:
    work = engine()
    await device("g-1", "pi", T0, {"temp_c": 90, "disk_pct": 99}, ward="a")
    await device("g-2", "pi", T0, {"temp_c": 90}, ward="a")
    await device("g-3", "esp32", T0, {"heap_free": 10}, ward="b")
    await work.tick(T0)
    first = await live("g-1", "temp_high")
    assert first is not None
    await alerts.acknowledge(first.id, "ops1", T0)
    wards, total = await alerts.groups("ward")
    assert total == 2 and [(g.key, g.live, g.open, g.acknowledged) for g in wards] == [("a", 3, 2, 1), ("b", 1, 1, 0)]
    assert wards[0].worst == "major" and wards[0].by_severity == {"major": 3}
    assert wards[1].worst == "minor"
    devices, total = await alerts.groups("device", limit=2, offset=1)
    assert total == 3 and [g.key for g in devices] == ["g-2", "g-3"]
    items, total = await alerts.list_alerts(alerts.AlertFilter(state="live", ward="a"), limit=2)
    assert total == 3 and len(items) == 2
    items, total = await alerts.list_alerts(alerts.AlertFilter(state="acknowledged", kind="temp_high"))
    assert total == 1 and items[0].id == first.id
