"""The ingest's bulk helpers (fleet/ingest/bulk.py) give what Tortoise's own calls give, on SQLite
and PostgreSQL: instances loaded by primary key, saves of many, telemetry rows inserted in one go."""

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from contract import parse_upstream
from fleet.db import database
from fleet.ingest.bulk import SQLITE_IDS_PER_QUERY, load_by_pk, save_many
from fleet.ingest.store import INGEST_COLUMNS, apply_batch
from fleet.models import Device, DeviceStatus, SeqGap, TelemetryRecord
from fleet.settings import Settings

T0 = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[None]:
    async with database(Settings(database_url=database_url)):
        yield


async def _devices(count: int) -> list[str]:
    ids = [f"bulk-{n:04d}" for n in range(count)]
    await Device.bulk_create([
        Device(id=i, status=DeviceStatus.ACTIVE if n % 2 else DeviceStatus.DISCOVERED, session=n, epoch=n % 3,
               online=bool(n % 2), birth={"ses": n, "prev": {"ses": 1, "next_seq": 2}} if n % 5 == 0 else None,
               last_health={"up_s": n}, last_health_at=T0 + timedelta(seconds=n % 4), tags=["a", str(n)])
        for n, i in enumerate(ids)])
    return ids


async def test_load_by_pk_gives_what_filter_gives(db: None) -> None:
    ids = await _devices(SQLITE_IDS_PER_QUERY + 50)  # two chunks on SQLite
    expected = {d.id: d for d in await Device.filter(id__in=ids)}
    conn = Tortoise.get_connection("default")
    whole = {d.id: d for d in await load_by_pk(conn, Device, [*ids, "no-such-device"])}
    assert whole.keys() == expected.keys()
    for device_id, device in whole.items():
        assert not device._partial and device._saved_in_db
        for name in Device._meta.fields_map:
            assert getattr(device, name) == getattr(expected[device_id], name), name
    partial = {d.id: d for d in await load_by_pk(conn, Device, ids, INGEST_COLUMNS)}
    for device_id, device in partial.items():
        assert device._partial
        assert isinstance(device.status, DeviceStatus)
        for name in INGEST_COLUMNS:
            assert getattr(device, name) == getattr(expected[device_id], name), name
        assert not hasattr(device, "tags") and not hasattr(device, "last_health")
    # equal values converted once are still each device's own where they are mutable (JSON)
    births = [d.birth for d in partial.values() if d.birth is not None]
    assert len({id(b) for b in births}) == len(births)


async def test_save_many_writes_what_save_writes(db: None) -> None:
    ids = await _devices(4)
    conn = Tortoise.get_connection("default")
    devices = await load_by_pk(conn, Device, ids, ("id", "last_seen_at", "online", "last_health", "updated_at"))
    before = datetime.now(UTC)
    for n, device in enumerate(devices):
        device.last_seen_at = T0  # one value for all: converted once
        device.online = n == 0
        device.last_health = {"n": n}  # a document each
    await save_many(conn, devices, ("last_seen_at", "online", "last_health", "updated_at"))
    stored = {d.id: d for d in await Device.filter(id__in=ids)}
    for n, device_id in enumerate(ids):
        row = stored[device_id]
        assert row.last_seen_at == T0 and row.online is (n == 0) and row.last_health == {"n": n}
        assert row.updated_at >= before - timedelta(seconds=1)  # auto_now: the save's time, not the value held
        assert row.tags == ["a", str(n)]  # not written


async def test_a_health_batch_writes_back_only_the_health_it_took(db: None) -> None:
    ids = await _devices(3)
    batch = [parse_upstream(f"ioc/v1/d/{ids[0]}/health",
                            json.dumps({"v": 1, "ses": 9, "seq": 0, "ts": None, "up_s": 5, "fw": "0.1.0"}).encode()),
             parse_upstream(f"ioc/v1/d/{ids[1]}/telemetry",
                            json.dumps({"v": 1, "ses": 9, "seq": 0, "ts": None, "role": "air",
                                        "r": {"t": 1.5}}).encode())]
    result = await apply_batch(batch, now=T0 + timedelta(minutes=1))
    assert result.stored == 2
    stored = {d.id: d for d in await Device.filter(id__in=ids)}
    assert stored[ids[0]].last_health == {"up_s": 5, "fw": "0.1.0"}
    assert stored[ids[0]].last_health_at == T0 + timedelta(minutes=1)
    assert stored[ids[1]].last_health == {"up_s": 1} and stored[ids[1]].last_seen_at == T0 + timedelta(minutes=1)
    assert stored[ids[2]].last_seen_at is None  # not in the batch


async def test_telemetry_rows_keep_their_times_and_readings(db: None) -> None:
    now = T0 + timedelta(minutes=5)
    bodies = [{"v": 1, "ses": 3, "seq": 0, "ts": None, "role": "air", "r": {"t\u00e9mp": -1.25, "n": 7}},
              {"v": 1, "ses": 3, "seq": 1, "ts": 1795766400123, "role": "air", "r": {"t": 1e-7}},
              {"v": 1, "ses": 3, "seq": 2, "ts": 1795766400456, "at_ms": 1795766300001, "role": "air",
               "r": {"big": 9007199254740991}}]
    batch = [parse_upstream("ioc/v1/d/bulk-tele/telemetry", json.dumps(b).encode()) for b in bodies]
    assert (await apply_batch(batch, now=now)).stored == 3
    rows = await TelemetryRecord.filter(device_id="bulk-tele").order_by("seq")
    assert [r.readings for r in rows] == [b["r"] for b in bodies]
    assert [r.device_ts for r in rows] == [None, 1795766400123, 1795766400456]
    assert [r.at for r in rows] == [now, datetime.fromtimestamp(1795766400.123, UTC),
                                    datetime.fromtimestamp(1795766300.001, UTC)]
    assert all(r.received_at == now and r.role == "air" and r.epoch == 0 and r.ses == 3 for r in rows)
    assert (await apply_batch(batch, now=now)).duplicates == 3
    assert await TelemetryRecord.filter(device_id="bulk-tele").count() == 3


async def test_streams_split_between_two_instances_leave_no_gap_and_few_statements(
        db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared subscription hands one stream's messages to two instances in turn: each batch opens
    a gap for every hole the other instance fills. The gaps are read, opened and closed a batch at
    a time (fleet/ingest/bulk.py), and in the end every message is stored once and no gap is open."""
    devices, per_device = 21, 30  # odd: the round robin gives each stream every other number
    messages = [parse_upstream(f"ioc/v1/d/split-{d:02d}/telemetry", json.dumps(
        {"v": 1, "ses": 7, "seq": seq, "ts": None, "role": "light", "r": {"lux": seq}}).encode())
        for seq in range(per_device) for d in range(devices)]
    await apply_batch(messages[:devices])  # seq 0 of each: the devices and their streams exist
    rest = messages[devices:]
    first, second = rest[0::2], rest[1::2]  # round robin: every stream split between the two

    statements: list[str] = []  # every statement a batch's transaction runs
    async with in_transaction() as tx:
        wrapper = type(tx)
    for name in ("execute_query", "execute_insert", "execute_many"):
        def counting(original: Any) -> Any:
            async def run(self: Any, sql: str, *args: Any) -> Any:
                statements.append(sql)
                return await original(self, sql, *args)
            return run
        monkeypatch.setattr(wrapper, name, counting(getattr(wrapper, name)))
    opened = await apply_batch(first)
    closed = await apply_batch(second)
    monkeypatch.undo()
    assert opened.stored == len(first) and closed.stored == len(second)
    assert opened.gaps_opened >= devices and closed.late >= devices
    assert await SeqGap.filter(open=True).count() == 0
    assert await TelemetryRecord.filter(device_id__startswith="split-").count() == devices * per_device
    gap_statements = [s for s in statements if "seq_gap" in s]
    # per batch: one read of the open gaps, one insert, one update; never one per gap
    assert 1 <= len(gap_statements) <= 6, gap_statements
