"""How long the city report takes at scale (docs/relay.md, "City reports"), on PostgreSQL.

    .venv/bin/python -m benchmarks.reports --devices 10000

A fresh database holds `--devices` devices over 8 wards and one month (2026-10 in FLEET_TIMEZONE)
of rows, made by the database itself (INSERT … SELECT generate_series): a quarter of the devices
lamps (a light sample every 6 h), a twentieth hotspots (24 hourly and 1 daily report a day), the rest
sensors (a reading every 12 h); the cameras' motion events (start and end), presence changes
(every 3 days or so per device) and broadcast receipts. Prints the row counts, then the median of
`--runs` answers of `GET /api/reports/city?month=2026-10` through a running fleet (HTTP, JSON),
of `city_report()` called directly, and, as the same-run baseline, of a plain
`SELECT count(*)` over the month's telemetry rows (one scan of the same rows, nothing computed).
Needs PostgreSQL on 127.0.0.1:5432 and Mosquitto on 127.0.0.1:1883.
"""

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tortoise import Tortoise

from fleet.broadcast.models import Broadcast, Clip, Level
from fleet.models import Device, DeviceStatus
from fleet.relay import reports
from fleet.relay.reports import city_report, parse_month
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.postgres import fresh_database

WARDS = ["tan-phu", "tan-binh", "tan-xuan", "tan-thien", "tan-dong", "phu-thinh", "tien-thanh", "tan-thanh"]
MONTH = parse_month("2026-10", ZoneInfo("Asia/Ho_Chi_Minh"))


def _kind(n: int) -> str:
    return "lamp" if n % 4 == 0 else "hot" if n % 20 == 1 else "cam" if n % 4 == 2 else "env"


async def fill(devices: int) -> dict[str, int]:
    created = MONTH.start - timedelta(days=90)
    await Device.bulk_create([Device(id=f"{_kind(n)}-{n:05d}", kind="esp32" if _kind(n) == "lamp" else "pi",
                                     ward=WARDS[n % len(WARDS)], status=DeviceStatus.ACTIVE, created_at=created)
                              for n in range(devices)], batch_size=2000)
    clip = await Clip.create(title="b", source="tts", source_sha256="0" * 64, source_format="wav", source_bytes=1,
                             duration_ms=1000, created_by="bench")
    broadcast = await Broadcast.create(title="b", clip=clip, level=Level.NORMAL, targets={"wards": WARDS},
                                       start_local="2026-10-01T08:00:00", timezone=MONTH.tz.key, created_by="b",
                                       updated_by="b")
    conn = Tortoise.get_connection("default")
    start = MONTH.start
    days = int((MONTH.end - MONTH.start) / timedelta(days=1))
    statements = [
        # lamps: burn_h and energy_wh rising every 6 h
        ("INSERT INTO telemetry (device_id, epoch, ses, seq, received_at, at, role, readings) "
         "SELECT d.id, 0, 1, s, $1::timestamptz + s * interval '6 hours', $1::timestamptz + s * interval '6 hours', "
         "'light', jsonb_build_object('level', 800, 'ma', 300, 'burn_h', s * 3.5, 'energy_wh', s * 300.0) "
         "FROM device d, generate_series(0, $2 * 4 - 1) s WHERE d.id LIKE 'lamp-%'", [start, days]),
        # hotspots: 24 hourly reports and one daily one a day
        ("INSERT INTO telemetry (device_id, epoch, ses, seq, received_at, at, role, readings) "
         "SELECT d.id, 0, 2, s, $1::timestamptz + s * interval '1 hour', $1::timestamptz + s * interval '1 hour', "
         "'hotspot', jsonb_build_object('period_s', 3600, 'accesses', 12, 'users', 9) "
         "FROM device d, generate_series(0, $2 * 24 - 1) s WHERE d.id LIKE 'hot-%'", [start, days]),
        ("INSERT INTO telemetry (device_id, epoch, ses, seq, received_at, at, role, readings) "
         "SELECT d.id, 0, 3, s, $1::timestamptz + s * interval '1 day', $1::timestamptz + s * interval '1 day', "
         "'hotspot', jsonb_build_object('period_s', 86400, 'accesses', 288, 'users', 120, 'users_capped', 0) "
         "FROM device d, generate_series(0, $2 - 1) s WHERE d.id LIKE 'hot-%'", [start, days]),
        # sensors: a reading every 12 h (rows the report does not read, in the same table)
        ("INSERT INTO telemetry (device_id, epoch, ses, seq, received_at, at, role, readings) "
         "SELECT d.id, 0, 4, s, $1::timestamptz + s * interval '12 hours', $1::timestamptz + s * interval '12 hours', "
         "'sensor', jsonb_build_object('pm25', 12.5, 'temp_c', 31.0) "
         "FROM device d, generate_series(0, $2 * 2 - 1) s WHERE d.id LIKE 'env-%'", [start, days]),
        # cameras: 4 motion events a day (start and end)
        ("INSERT INTO event (device_id, epoch, ses, seq, received_at, at, event_id, type, phase, category, data) "
         "SELECT d.id, 0, 5, s * 2 + p, $1::timestamptz + s * interval '6 hours' + p * interval '20 seconds', "
         "$1::timestamptz + s * interval '6 hours' + p * interval '20 seconds', 'm' || s, 'motion', "
         "CASE WHEN p = 0 THEN 'start' ELSE 'end' END, "
         "(ARRAY['security', 'traffic_safety', 'other'])[1 + s % 3], '{}'::jsonb "
         "FROM device d, generate_series(0, $2 * 4 - 1) s, generate_series(0, 1) p WHERE d.id LIKE 'cam-%'",
         [start, days]),
        # presence: a change about every 3 days per device, alternating, from before the month
        ("INSERT INTO ops_presence_change (device_id, at, online, reason) "
         "SELECT d.id, $1::timestamptz - interval '2 days' + s * interval '71 hours', s % 2 = 0, 'birth' "
         "FROM device d, generate_series(0, 11) s", [start]),
        # receipts: each speaker-capable sensor node, one broadcast a day
        ("INSERT INTO broadcast_receipt (broadcast_id, device_id, entry_id, occurrence_at, version, state, emergency, "
         "updated_at) SELECT $3, d.id, 'b1.' || s, $1::timestamptz + s * interval '1 day', 1, "
         "(ARRAY['completed', 'completed', 'failed', 'missed', 'skipped'])[1 + s % 5], false, now() "
         "FROM device d, generate_series(0, $2 - 1) s WHERE d.id LIKE 'env-%' AND right(d.id, 1) = '3'",
         [start, days, broadcast.id]),
    ]
    for sql, values in statements:
        await conn.execute_query(sql, values)
    await conn.execute_query("ANALYZE")
    counts = {}
    for table in ("device", "telemetry", "event", "ops_presence_change", "broadcast_receipt"):
        _, rows = await conn.execute_query(f"SELECT count(*) FROM {table}")
        counts[table] = int(rows[0][0])
    return counts


async def timed(runs: int, work) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await work()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    async with fresh_database() as url:
        settings = fleet_settings(url, "mqtt://127.0.0.1:1883", retention_raw_days=3650, retention_hourly_days=3650,
                                  retention_events_days=3650, retention_presence_days=3650)
        async with running_fleet(settings) as http:
            began = time.perf_counter()
            counts = await fill(args.devices)
            print(f"rows: {counts} (made in {time.perf_counter() - began:.1f} s)")
            conn = Tortoise.get_connection("default")

            async def baseline() -> None:
                await conn.execute_query("SELECT count(*) FROM telemetry WHERE at >= $1 AND at < $2",
                                         [MONTH.start, MONTH.end])

            async def api() -> None:
                answer = await http.get("/api/reports/city", params={"month": MONTH.label}, timeout=600)
                answer.raise_for_status()

            now = datetime.now(UTC)
            report = await city_report(MONTH, now=now)
            print(f"totals: {report['totals']['camera_events']}, wifi {report['totals']['wifi']}, "
                  f"availability {report['totals']['availability']}, lighting {report['totals']['lighting']}")
            count_s = await timed(args.runs, baseline)
            direct_s = await timed(args.runs, lambda: city_report(MONTH, now=now))
            api_s = await timed(args.runs, api)
            for part in (reports._event_starts, reports._wifi, reports._counters, reports._broadcasts):
                began = time.perf_counter()
                await part(conn, MONTH, None)
                print(f"  {part.__name__}: {(time.perf_counter() - began) * 1000:.0f} ms")
            began = time.perf_counter()
            await reports._availability(conn, MONTH, None, now)
            print(f"  _availability: {(time.perf_counter() - began) * 1000:.0f} ms")
            print(f"median of {args.runs}: GET /api/reports/city {api_s * 1000:.0f} ms, city_report() "
                  f"{direct_s * 1000:.0f} ms; baseline count(*) over the month's telemetry {count_s * 1000:.0f} ms "
                  f"(report / baseline {direct_s / count_s:.1f}x)")


if __name__ == "__main__":
    asyncio.run(main())
