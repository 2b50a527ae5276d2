"""Presence changes written down (docs/ops.md, "Presence and its timings"): the real fleet through a
real Mosquitto records births, the broker's will, the sweep's verdict and a resumption, each once;
fleet/ops/presence.py counts them in SQL. SQLite and PostgreSQL."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fleet.db import database
from fleet.ingest import silence
from fleet.ingest.silence import sweep_once, unix_ms
from fleet.liveness import Hearing, Timing
from fleet.models import Device, DeviceStatus
from fleet.ops import presence
from fleet.ops.models import PresenceChange
from fleet.settings import Settings
from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


async def _reasons(device_id: str) -> list[str | None]:
    return [r for r in await PresenceChange.filter(device_id=device_id).order_by("id").values_list("reason", flat=True)]


async def _reasons_are(device_id: str, expected: list[str]) -> list[str | None] | None:
    reasons = await _reasons(device_id)
    return reasons if reasons == expected else None


async def test_a_device_life_is_written_down_change_by_change(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    first = ScriptedDevice(mosquitto.port, device_id, ses=1)
    first.birth(period_s=30)
    await async_wait_for(lambda: _reasons_are(device_id, ["birth"]), what="the birth's row")
    first.birth(period_s=30)  # the same birth again (a redelivery): it does not count, no row
    first.kill()  # no DISCONNECT: the broker publishes the will at once (the socket closed)
    await async_wait_for(lambda: _reasons_are(device_id, ["birth", "lost"]), what="the will's row")

    second = ScriptedDevice(mosquitto.port, device_id, ses=2)
    second.birth(period_s=30)
    await async_wait_for(lambda: _reasons_are(device_id, ["birth", "lost", "birth"]), what="the second birth")
    # the sweep's verdict, at a `now` 3 periods on (the background sweep, at the real time, finds nothing)
    later = datetime.now(UTC) + timedelta(seconds=200)
    assert await sweep_once(later, Hearing(timedelta(hours=1)), Timing()) == [device_id]
    assert await _reasons(device_id) == ["birth", "lost", "birth", "silent"]
    silent = await PresenceChange.filter(device_id=device_id, reason="silent").get()
    assert silent.online is False and silent.at == later

    second.health()  # the connection stood through the silence: its next health brings it back
    await async_wait_for(lambda: _reasons_are(device_id, ["birth", "lost", "birth", "silent", "resumed"]),
                         what="resumed")
    second.health()  # already online: no row
    second.death(reason="shutdown")
    expected = ["birth", "lost", "birth", "silent", "resumed", "shutdown"]
    await async_wait_for(lambda: _reasons_are(device_id, expected), what="the goodbye")
    received = (await fleet.get("/api/ingest/stats")).json()["received"]
    second.health(seq=0)  # a message of the ended session (a replay) brings nothing back
    second.death(reason="lost")  # a death of a device already offline changes nothing
    second.close()
    rows = await PresenceChange.filter(device_id=device_id).order_by("id")
    assert [r.online for r in rows] == [True, False, True, False, True, False]

    async def health_counted() -> bool:
        stats = (await fleet.get("/api/ingest/stats")).json()
        return bool(stats["received"] >= received + 2 and stats["accounted"] == stats["received"])

    await async_wait_for(health_counted, what="the replay and the late death taken in")
    assert await _reasons(device_id) == expected
    assert await presence.changes_since([device_id], start) == {device_id: 6}
    assert await presence.births_since(None, start) == {device_id: 2}
    assert await presence.changes_since(None, later) == {device_id: 1}  # the verdict, stamped `later`


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[None]:
    async with database(Settings(database_url=database_url)):
        yield


async def test_counts_are_grouped_per_device_since_a_time(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presence, "IDS_PER_QUERY", 2)  # several statements for one call
    rows = []
    # flappy: offline and online every minute for an hour; steady: one birth; booting: a birth each 5 min
    for minute in range(60):
        rows.append(PresenceChange(device_id="flappy", at=T0 + timedelta(minutes=minute), online=minute % 2 == 0,
                                   reason="birth" if minute % 2 == 0 else "lost"))
        if minute % 5 == 0:
            rows.append(PresenceChange(device_id="booting", at=T0 + timedelta(minutes=minute), online=True,
                                       reason="birth"))
    rows.append(PresenceChange(device_id="steady", at=T0, online=True, reason="birth"))
    rows.append(PresenceChange(device_id="quiet", at=T0 + timedelta(minutes=50), online=False, reason="silent"))
    await PresenceChange.bulk_create(rows)

    since = T0 + timedelta(minutes=50)  # the last 10 minutes, `since` itself included
    assert await presence.changes_since(None, since) == {"flappy": 10, "booting": 2, "quiet": 1}
    assert await presence.births_since(None, since) == {"flappy": 5, "booting": 2}
    ids = ["flappy", "steady", "quiet", "booting", "nobody", "flappy"]
    assert await presence.changes_since(ids, T0) == {"flappy": 60, "steady": 1, "quiet": 1, "booting": 12}
    assert await presence.births_since(ids, T0) == {"flappy": 30, "steady": 1, "booting": 12}
    assert await presence.changes_since(["nobody"], T0) == {}
    assert await presence.changes_since([], T0) == {}


async def test_the_sweep_writes_one_row_per_device_it_marks(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(silence, "SWEEP_BATCH", 7)  # several statements, each with its own rows
    heard = T0 - timedelta(seconds=100)
    await Device.bulk_create([Device(id=f"quiet-{n:02d}", status=DeviceStatus.ACTIVE, online=True, session=1,
                                     last_seen_at=heard, last_seen_ms=unix_ms(heard), health_period_s=10 + n)
                              for n in range(20)])  # quiet for 100 s, 3 periods of at most 29 s: all silent
    marked = await sweep_once(T0, Hearing(timedelta(hours=1)), Timing())
    assert sorted(marked) == [f"quiet-{n:02d}" for n in range(20)]
    rows = await PresenceChange.all()
    assert sorted(r.device_id for r in rows) == sorted(marked)
    assert {(r.online, r.reason, r.at) for r in rows} == {(False, "silent", T0)}
    assert await sweep_once(T0, Hearing(timedelta(hours=1)), Timing()) == []  # done: no second row
    assert await PresenceChange.all().count() == 20
