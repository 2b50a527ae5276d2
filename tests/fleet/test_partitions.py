"""Telemetry partitioned by month on PostgreSQL (fleet/partitions.py, docs/fleet.md "Telemetry at
scale"): rows land in their month's partition (outliers in DEFAULT, moved out when their month
is created), the API's device + range query is pruned to its months and index-driven, retention
drops a whole old partition after writing its exact hourly roll-ups and touches nothing newer, and
a plain table with rows is converted keeping every row."""

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from fleet.api.routes.data import _range
from fleet.db import MODELS, database
from fleet.models import TelemetryRecord
from fleet.ops import retention
from fleet.ops.models import TelemetryHourly
from fleet.ops.retention import Retention
from fleet.partitions import ROLLUP_TABLE, ensure_partitioned, partitions
from fleet.settings import Settings
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def conn(pg_url: str) -> AsyncIterator[BaseDBAsyncClient]:
    async with database(Settings(database_url=pg_url, retention_raw_days=14)):
        connection = Tortoise.get_connection("default")
        await ensure_partitioned(connection, JAN + timedelta(days=14))  # January to March 2026
        yield connection


_seq = iter(range(1, 10**6))


def row(at: datetime, readings: dict[str, Any], device: str = "pi-p") -> TelemetryRecord:
    return TelemetryRecord(device_id=device, ses=1, seq=next(_seq), received_at=at, at=at, role="sensor",
                           readings=readings)


async def where(conn: BaseDBAsyncClient) -> dict[datetime, str]:
    rows = await conn.execute_query_dict("SELECT at, tableoid::regclass::text AS part FROM telemetry")
    return {r["at"]: r["part"] for r in rows}


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in plan_nodes(child))]


async def explain(conn: BaseDBAsyncClient, sql: str) -> list[dict[str, Any]]:
    found = await conn.execute_query_dict(f"EXPLAIN (FORMAT JSON) {sql}")
    doc = found[0]["QUERY PLAN"]
    return plan_nodes((json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"])


async def test_rows_land_by_month_and_the_range_query_is_pruned(conn: BaseDBAsyncClient) -> None:
    edge = [JAN, FEB - timedelta(microseconds=1), FEB, datetime(2026, 3, 31, 23, tzinfo=UTC)]
    far = [datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC), datetime(2026, 4, 2, tzinfo=UTC)]
    await TelemetryRecord.bulk_create([row(at, {"pm25": 1}) for at in edge + far])
    assert await where(conn) == {
        edge[0]: "telemetry_p2026_01", edge[1]: "telemetry_p2026_01", edge[2]: "telemetry_p2026_02",
        edge[3]: "telemetry_p2026_03", far[0]: "telemetry_default", far[1]: "telemetry_default",
        far[2]: "telemetry_default"}
    # April's partition made later takes April's row out of DEFAULT; a second call changes nothing
    assert await ensure_partitioned(conn, far[2]) == ["telemetry_p2026_04", "telemetry_p2026_05",
                                                      "telemetry_p2026_06"]
    assert (await where(conn))[far[2]] == "telemetry_p2026_04"
    assert await ensure_partitioned(conn, far[2]) == []

    # 12,000 rows of 20 devices over 83 days; the API's query (GET /api/devices/{id}/telemetry)
    await conn.execute_script(
        "INSERT INTO telemetry (device_id, epoch, ses, seq, received_at, at, role, readings) "
        "SELECT 'd' || (g % 20), 0, 1, g, now(), '2026-01-01 00:00+00'::timestamptz + g * interval '10 minutes', "
        "'sensor', '{\"pm25\": 1}' FROM generate_series(1, 12000) g")
    await conn.execute_script("VACUUM ANALYZE telemetry")
    since, until = datetime(2026, 2, 3, tzinfo=UTC), datetime(2026, 2, 10, tzinfo=UTC)
    query = TelemetryRecord.filter(device_id="d3", **_range(since, until)).order_by("at", "ses", "seq").limit(1000)
    nodes = await explain(conn, query.sql(params_inline=True))
    scanned = {n["Relation Name"] for n in nodes if "Relation Name" in n}
    assert scanned == {"telemetry_p2026_02"}  # pruned to February
    # the device's rows are spread over the month: an index scan, or a bitmap one when many
    assert {n["Node Type"] for n in nodes if "Scan" in n["Node Type"]} <= {"Index Scan", "Bitmap Index Scan",
                                                                           "Bitmap Heap Scan"}
    assert {n["Index Name"] for n in nodes if "Index Name" in n} == {"telemetry_p2026_02_device_id_at_idx"}
    assert len(await query) == 50  # 1,008 ten-minute slots in 7 days, every 20th of them d3's
    # as asyncpg sends it, a prepared statement: a generic plan prunes when it starts executing
    sql, values = query.sql(), ["d3", since, until, 1000]
    assert sql.count("$") == len(values)
    async with conn._in_transaction() as tx:
        await tx.execute_script("SET LOCAL plan_cache_mode = force_generic_plan")
        await tx.execute_query(f"PREPARE by_range AS {sql}")
        found = await tx.execute_query_dict("EXPLAIN (FORMAT JSON) EXECUTE by_range('d3', "
                                            f"'{since.isoformat()}', '{until.isoformat()}', 1000)")
        await tx.execute_script("DEALLOCATE by_range")
    doc = found[0]["QUERY PLAN"]
    nodes = plan_nodes((json.loads(doc) if isinstance(doc, str) else doc)[0]["Plan"])
    assert {n["Relation Name"] for n in nodes if "Relation Name" in n} == {"telemetry_p2026_02"}
    assert sum(n.get("Subplans Removed", 0) for n in nodes) == len(await partitions(conn)) - 1
    assert "Seq Scan" not in {n["Node Type"] for n in nodes}
    # the columns of the index alone (how many rows a device has in a range): index-only
    nodes = await explain(conn, "SELECT count(*) FROM telemetry WHERE device_id = 'd3' "
                                "AND at >= '2026-01-20' AND at < '2026-02-10'")
    assert {n["Relation Name"] for n in nodes if "Relation Name" in n} == {"telemetry_p2026_01", "telemetry_p2026_02"}
    assert {n["Node Type"] for n in nodes if "Scan" in n["Node Type"]} == {"Index Only Scan"}


async def test_retention_drops_a_whole_old_month(conn: BaseDBAsyncClient, pg_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "CHUNK_ROWS", 2)  # several chunks, one of them across two devices
    h0 = JAN + timedelta(days=30, hours=10)
    await TelemetryRecord.bulk_create([
        row(h0 + timedelta(minutes=1), {"pm25": 10, "pm10": 20}), row(h0 + timedelta(minutes=2), {"pm25": 13}),
        row(h0 + timedelta(hours=1), {"pm25": 5}), row(h0, {"pm25": 7}, device="esp-p"),
        row(h0 + timedelta(minutes=3), {"pm25": 1}, device="esp-p"),
        row(FEB + timedelta(hours=1), {"pm25": 99}),  # February: younger than the month's end
    ])
    settings = Settings(database_url=pg_url, retention_raw_days=14)
    report = await Retention(settings).run(FEB + timedelta(days=20))  # cutoff Feb 6: January is older
    assert report.dropped == ["telemetry_p2026_01"] and report.rolled["telemetry_partitions"] == 5
    assert "telemetry_p2026_01" not in await partitions(conn)
    assert await conn.execute_query_dict(f"SELECT * FROM {ROLLUP_TABLE}") == []
    rows = await TelemetryHourly.all().order_by("device_id", "hour").values_list("device_id", "hour", "figures",
                                                                                  "messages")
    assert rows == [
        ("esp-p", h0, {"pm25": {"min": 1, "max": 7, "mean": 4, "n": 2}}, 2),
        ("pi-p", h0, {"pm25": {"min": 10, "max": 13, "mean": 11.5, "n": 2}, "pm10": {"min": 20, "max": 20,
                                                                                   "mean": 20, "n": 1}}, 2),
        ("pi-p", h0 + timedelta(hours=1), {"pm25": {"min": 5, "max": 5, "mean": 5, "n": 1}}, 1),
    ]
    assert await TelemetryRecord.all().values_list("at", flat=True) == [FEB + timedelta(hours=1)]
    # a late January row now lands in DEFAULT and is merged into its hour by the row path
    await TelemetryRecord.bulk_create([row(h0 + timedelta(minutes=4), {"pm25": 4})])
    assert set((await where(conn)).values()) == {"telemetry_p2026_02", "telemetry_default"}
    report = await Retention(settings).run(FEB + timedelta(days=20))
    assert report.dropped == [] and report.rolled["telemetry"] == 1
    assert (await TelemetryHourly.get(device_id="pi-p", hour=h0)).figures["pm25"] == {
        "min": 4, "max": 13, "mean": 9, "n": 3}
    assert await TelemetryRecord.all().count() == 1


async def test_two_instances_roll_up_a_month_once(conn: BaseDBAsyncClient, pg_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "CHUNK_ROWS", 3)
    monkeypatch.setattr(retention, "ROWS_PER_RUN", 7)
    devices = [f"d{n}" for n in range(4)]
    await TelemetryRecord.bulk_create([row(JAN + timedelta(hours=5, minutes=m), {"v": m}, device=d)
                                       for d in devices for m in range(10)])
    settings = Settings(database_url=pg_url, retention_raw_days=14)
    first, second = Retention(settings), Retention(settings)
    dropped = []
    for _ in range(20):
        reports = await asyncio.gather(first.run(FEB + timedelta(days=20)), second.run(FEB + timedelta(days=20)))
        dropped += [name for r in reports for name in r.dropped]
        if not any(r.more for r in reports):
            break
    assert dropped == ["telemetry_p2026_01"]
    for device in devices:
        hour = await TelemetryHourly.get(device_id=device, hour=JAN + timedelta(hours=5))
        assert (hour.figures["v"], hour.messages) == ({"min": 0, "max": 9, "mean": 4.5, "n": 10}, 10)


async def test_a_plain_table_with_rows_is_converted(pg_url: str) -> None:
    await Tortoise.init(db_url=pg_url, modules={"models": MODELS})
    try:
        await Tortoise.generate_schemas(safe=True)
        conn = Tortoise.get_connection("default")
        moments = [datetime(2025, 6, 1, tzinfo=UTC) + timedelta(days=9 * n) for n in range(60)]
        moments.append(datetime(1970, 1, 1, tzinfo=UTC))  # a board whose clock was never set
        await TelemetryRecord.bulk_create([row(at, {"n": n}) for n, at in enumerate(moments)])
        before = await conn.execute_query_dict("SELECT id, device_id, seq, at, readings FROM telemetry ORDER BY id")
        created = await ensure_partitioned(conn, datetime(2026, 11, 30, tzinfo=UTC))
        assert created[0] == "telemetry_default" and created[1] == "telemetry_p2025_06"
        assert created[-1] == "telemetry_p2027_01" and len(created) == 1 + 20
        after = await conn.execute_query_dict("SELECT id, device_id, seq, at, readings FROM telemetry ORDER BY id")
        assert after == before
        assert (await where(conn))[moments[-1]] == "telemetry_default"
        assert all(part == f"telemetry_p{at.year}_{at.month:02d}" for at, part in (await where(conn)).items()
                   if at.year > 2000)
        # the id sequence goes on; a replay of a stored message is still dropped by the unique key
        again = before[3]
        await TelemetryRecord.bulk_create([TelemetryRecord(device_id="pi-p", ses=1, seq=again["seq"],
                                                           received_at=again["at"], at=again["at"], role="sensor",
                                                           readings={"n": -1}),
                                           row(datetime(2026, 11, 30, tzinfo=UTC), {"n": 99})],
                                          ignore_conflicts=True)
        ids = await conn.execute_query_dict("SELECT id FROM telemetry ORDER BY id")
        assert len(ids) == len(before) + 1 and ids[-1]["id"] > before[-1]["id"]
        indexes = await conn.execute_query_dict("SELECT indexname FROM pg_indexes WHERE tablename = 'telemetry'")
        await Tortoise.generate_schemas(safe=True)  # a later start: nothing added, nothing refused
        assert await conn.execute_query_dict("SELECT indexname FROM pg_indexes WHERE tablename = 'telemetry'") \
            == indexes
        assert await ensure_partitioned(conn, datetime(2026, 11, 30, tzinfo=UTC)) == []
    finally:
        await Tortoise.close_connections()
