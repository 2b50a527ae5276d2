"""Retention of one month of telemetry on PostgreSQL: whole partition vs row deletes, same run.

Two fresh databases with the same N rows of January 2026 (D devices, one telemetry row per device
every few seconds, readings {"pm25", "pm10"}) and a few February rows:
- partitioned (what the fleet makes, fleet/partitions.py): retention detaches January, reads it
  into the hourly roll-ups and drops it;
- plain (the table as `generate_schemas` makes it): retention rolls up and deletes row by row
  (DELETE ... RETURNING in chunks, the SQLite way and the way before partitions).
Both run `Retention.run(now)` until it reports no more work; the roll-ups are compared (must be
equal). Then the removal alone, on a fresh copy of the rows: `DETACH PARTITION` + `DROP TABLE` vs
`DELETE FROM telemetry WHERE at in January` and the `VACUUM` that clears the dead rows it leaves.
Prints wall times, ratios, dead rows, load.

    .venv/bin/python benchmarks/retention_partitions.py --rows 200000 --devices 100 --repeat 3
"""

import argparse
import asyncio
import os
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from tortoise import Tortoise

from fleet.db import MODELS, database
from fleet.ops.models import TelemetryHourly
from fleet.ops.retention import Retention
from fleet.partitions import ensure_partitioned
from fleet.settings import Settings
from tests.support.postgres import fresh_database

JAN = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 2, 20, tzinfo=UTC)  # raw window 14 days: January is wholly older


async def fill(rows: int, devices: int) -> None:
    step_s = 31 * 86400 * devices / rows  # the month spread evenly over each device's rows
    conn = Tortoise.get_connection("default")
    await conn.execute_query(
        "INSERT INTO telemetry (device_id, epoch, ses, seq, received_at, at, role, readings) "
        "SELECT 'dev-' || (g % $2), 0, 1, g, now(), $3::timestamptz + (g / $2) * $4 * interval '1 second', "
        "'sensor', jsonb_build_object('pm25', g % 97, 'pm10', (g % 13) * 1.5) FROM generate_series(1, $1) g",
        [rows, devices, JAN, step_s])
    await conn.execute_query(  # February: kept
        "INSERT INTO telemetry (device_id, epoch, ses, seq, received_at, at, role, readings) "
        "SELECT 'dev-0', 0, 2, g, now(), '2026-02-10'::timestamptz + g * interval '1 minute', 'sensor', "
        "'{\"pm25\": 1}' FROM generate_series(1, 100) g", [])
    await conn.execute_script("ANALYZE telemetry")


async def retain(settings: Settings, dropped: list[str]) -> tuple[float, int, list[Any]]:
    part = Retention(settings)
    start = time.perf_counter()
    runs = 0
    while True:
        runs += 1
        report = await part.run(NOW)
        dropped += report.dropped
        if not report.more:
            break
    elapsed = time.perf_counter() - start
    hourly = await TelemetryHourly.all().order_by("device_id", "hour").values_list("device_id", "hour", "messages",
                                                                                    "figures")
    left = await Tortoise.get_connection("default").execute_query_dict("SELECT count(*) AS n FROM telemetry")
    assert left[0]["n"] == 100, left  # only February's rows
    return elapsed, runs, hourly


async def dead_tuples() -> int:
    rows = await Tortoise.get_connection("default").execute_query_dict(
        "SELECT coalesce(sum(n_dead_tup), 0)::bigint AS n FROM pg_stat_user_tables WHERE relname LIKE 'telemetry%'")
    return int(rows[0]["n"])


async def once(rows: int, devices: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with fresh_database() as url:  # partitioned: what the fleet makes on PostgreSQL
        settings = Settings(database_url=url, retention_raw_days=14)
        async with database(settings):
            await ensure_partitioned(Tortoise.get_connection("default"), JAN)  # January's partition exists
            await fill(rows, devices)
            dropped: list[str] = []
            figures["partition"], runs_p, hourly_p = await retain(settings, dropped)
            assert dropped == ["telemetry_p2026_01"], dropped
    async with fresh_database() as url:  # plain: rows deleted
        settings = Settings(database_url=url, retention_raw_days=14)
        await Tortoise.init(db_url=url, modules={"models": MODELS})
        try:
            await Tortoise.generate_schemas(safe=True)
            await fill(rows, devices)
            figures["rows"], runs_r, hourly_r = await retain(settings, dropped)
            assert dropped == ["telemetry_p2026_01"], "the plain table has no partition to drop"
            await asyncio.sleep(1)  # let the statistics collector see the deletes
            figures["dead_rows"] = await dead_tuples()
        finally:
            await Tortoise.close_connections()
    assert hourly_p == hourly_r, "the two ways rolled up different figures"
    figures["hours"] = len(hourly_p)
    figures["runs_p"], figures["runs_r"] = runs_p, runs_r
    # the removal alone: one DELETE of the month vs DETACH + DROP of its partition
    async with fresh_database() as url:
        async with database(Settings(database_url=url)):
            conn = Tortoise.get_connection("default")
            await ensure_partitioned(conn, JAN)
            await fill(rows, devices)
            start = time.perf_counter()
            await conn.execute_script("ALTER TABLE telemetry DETACH PARTITION telemetry_p2026_01; "
                                      "DROP TABLE telemetry_p2026_01")
            figures["drop_only"] = time.perf_counter() - start
    async with fresh_database() as url:
        await Tortoise.init(db_url=url, modules={"models": MODELS})
        try:
            await Tortoise.generate_schemas(safe=True)
            await fill(rows, devices)
            start = time.perf_counter()
            await Tortoise.get_connection("default").execute_query(
                "DELETE FROM telemetry WHERE at >= $1 AND at < $2", [JAN, datetime(2026, 2, 1, tzinfo=UTC)])
            figures["delete_only"] = time.perf_counter() - start
            start = time.perf_counter()  # what the deletes leave to (auto)vacuum: dead rows, index entries
            await Tortoise.get_connection("default").execute_script("VACUUM telemetry")
            figures["vacuum"] = time.perf_counter() - start
        finally:
            await Tortoise.close_connections()
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="January's rows")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for n in range(args.repeat):
        figures = await once(args.rows, args.devices)
        runs.append(figures)
        print(f"run {n + 1}: roll-up + drop {figures['partition']:.2f} s ({figures['runs_p']:.0f} runs), "
              f"roll-up + row deletes {figures['rows']:.2f} s ({figures['runs_r']:.0f} runs), dead rows left "
              f"{figures['dead_rows']:.0f}; removal alone: DETACH+DROP {figures['drop_only'] * 1000:.1f} ms, "
              f"DELETE {figures['delete_only'] * 1000:.0f} ms + VACUUM {figures['vacuum'] * 1000:.0f} ms; "
              f"{figures['hours']:.0f} hourly rows equal",
              flush=True)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"\n{args.rows:,} January rows, {args.devices} devices, {args.repeat} runs, medians; "
          f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"  retention (roll-up + removal): partition {median('partition'):.2f} s "
          f"({args.rows / median('partition'):,.0f} rows/s), row deletes {median('rows'):.2f} s "
          f"({args.rows / median('rows'):,.0f} rows/s): {median('rows') / median('partition'):.2f}x")
    print(f"  removal alone: DETACH+DROP {median('drop_only') * 1000:.1f} ms, one DELETE "
          f"{median('delete_only') * 1000:.0f} ms: {median('delete_only') / median('drop_only'):.1f}x; "
          f"with the VACUUM after it {median('vacuum') * 1000:.0f} ms: "
          f"{(median('delete_only') + median('vacuum')) / median('drop_only'):.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
