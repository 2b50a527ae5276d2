"""How long one alert-engine turn takes over N devices with the builtin rules (docs/ops.md, "Alert rules").

    .venv/bin/python -m benchmarks.alert_engine --devices 10000 --db sqlite
    .venv/bin/python -m benchmarks.alert_engine --devices 10000 --db postgres

Devices: half Pi (camera, sensor, speaker roles), half ESP32 (light, sensor, speaker), each with
one health row and a current last_health; `--firing` percent of them hot (temp/heap/queue) and
with an open lamp_failure event. Prints the first turn (raises every alert), then the median of
`--turns` steady turns (nothing changes: keeps only), then a turn that resolves them all.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleet.db import database
from fleet.ingest.silence import unix_ms
from fleet.liveness import Hearing, Timing
from fleet.models import Device, DeviceStatus, EventRecord, HealthRecord
from fleet.ops.engine import AlertEngine
from fleet.ops.models import Alert
from fleet.settings import Settings
from tests.support.postgres import fresh_database

PI_ROLES = [["camera"], ["sensor"], ["speaker"], ["sim"]]
ESP_ROLES = [["light"], ["sensor"], ["speaker"]]


async def populate(n: int, firing_pct: float, now: datetime) -> int:
    devices, health, events = [], [], []
    firing = 0
    for i in range(n):
        pi = i % 2 == 0
        hot = (i * 7919) % 1000 < firing_pct * 10
        firing += hot
        body = ({"temp_c": 91.0 if hot else 55.0, "disk_pct": 40, "mem_pct": 30, "queue": 500 if hot else 0,
                 "dropped": 0, "roles": {"camera": {"fps": 12}}} if pi else
                {"heap_free": 2000 if hot else 40000, "queue": 0, "dropped": 0})
        device_id = f"bench-{i:05d}"
        devices.append(Device(id=device_id, kind="pi" if pi else "esp32", ward=f"ward-{i % 9}",
                              status=DeviceStatus.ACTIVE, online=True, session=1, last_seen_at=now,
                              last_seen_ms=unix_ms(now), health_period_s=60,
                              roles=(PI_ROLES if pi else ESP_ROLES)[i % (4 if pi else 3)], last_health=body,
                              last_health_at=now))
        health.append(HealthRecord(device_id=device_id, ses=1, seq=1, device_ts=unix_ms(now), received_at=now,
                                   data=body))
        if hot:
            events.append(EventRecord(device_id=device_id, ses=1, seq=2, device_ts=unix_ms(now), received_at=now,
                                      at=now, event_id="e1", type="lamp_failure", phase="start", category="other",
                                      data={}))
    await Device.bulk_create(devices, batch_size=1000)
    await HealthRecord.bulk_create(health, batch_size=1000)
    await EventRecord.bulk_create(events, batch_size=1000)
    return firing


async def run(url: str, n: int, firing_pct: float, turns: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with database(Settings(database_url=url)):
        hot = await populate(n, firing_pct, now)
        engine = AlertEngine(hearing=lambda: Hearing(timedelta(days=1)), timing=Timing())
        started, cpu = time.perf_counter(), time.process_time()
        await engine.tick(now)
        first, first_cpu = time.perf_counter() - started, time.process_time() - cpu
        raised = await Alert.filter(live_key__isnull=False).count()
        steady, steady_cpu = [], []
        for k in range(turns):
            started, cpu = time.perf_counter(), time.process_time()
            await engine.tick(now + timedelta(seconds=k + 1))
            steady.append(time.perf_counter() - started)
            steady_cpu.append(time.process_time() - cpu)
        calm = now + timedelta(seconds=turns + 1)
        await Device.all().update(last_health={"temp_c": 40.0, "heap_free": 40000, "queue": 0, "dropped": 0},
                                  last_seen_at=calm, last_seen_ms=unix_ms(calm))
        await EventRecord.filter(type="lamp_failure").delete()
        started = time.perf_counter()
        await engine.tick(calm)
        resolving = time.perf_counter() - started
        left = await Alert.filter(live_key__isnull=False).count()
    print(f"{n} devices, {hot} firing: first turn {first:.2f} s, fleet CPU {first_cpu:.2f} s ({raised} alerts "
          f"raised); steady turn median {statistics.median(steady):.2f} s, fleet CPU "
          f"{statistics.median(steady_cpu):.2f} s over {turns}; "
          f"resolving turn {resolving:.2f} s ({left} left live)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--firing", type=float, default=2.0, help="percent of devices firing")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    if args.db == "postgres":
        async with fresh_database() as url:
            await run(url, args.devices, args.firing, args.turns)
    else:
        with tempfile.TemporaryDirectory() as folder:
            await run(f"sqlite://{Path(folder) / 'bench.sqlite3'}", args.devices, args.firing, args.turns)


if __name__ == "__main__":
    asyncio.run(main())
