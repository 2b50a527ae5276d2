"""How long the database part of one GET /metrics takes over N devices (docs/ops.md, "Metrics").

    .venv/bin/python -m benchmarks.metrics_scrape --devices 10000 --db sqlite
    .venv/bin/python -m benchmarks.metrics_scrape --devices 10000 --db postgres

Devices: half Pi, half ESP32, in 9 wards, 7 role sets; about 70 % online, 10 % stale, 14 %
offline, 4 % never seen, 2 % decommissioned; 500 open alerts. Times `--scrapes` gatherings of the
devices' and alerts' figures (the grouped queries) rendered to the text format, prints p50 and p99.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from fleet.db import database
from fleet.ingest.silence import LivenessView, unix_ms
from fleet.liveness import Hearing, Timing
from fleet.models import Device, DeviceStatus
from fleet.ops.metrics import DeviceFigures, alert_families
from fleet.ops.models import Alert, AlertRule, Severity
from tests.support.postgres import fresh_database

ROLE_SETS = [["camera"], ["sensor"], ["speaker"], ["wifi"], ["light"], ["light", "sensor"], ["speaker", "sensor"]]


async def populate(n: int, now: datetime) -> None:
    devices = []
    for i in range(n):
        share = (i * 7919) % 100
        seen_ms = unix_ms(now - timedelta(seconds=150 if 70 <= share < 80 else 5))  # 150 s: stale at 60 s periods
        never = 94 <= share < 98
        devices.append(Device(
            id=f"bench-{i:05d}", kind="pi" if i % 2 == 0 else "esp32", ward=f"ward-{i % 9}", roles=ROLE_SETS[i % 7],
            status=DeviceStatus.DECOMMISSIONED if share >= 98 else DeviceStatus.ACTIVE,
            online=share < 80, session=None if never else 1, last_seen_at=None if never else now,
            last_seen_ms=None if never else seen_ms, health_period_s=60))
    await Device.bulk_create(devices, batch_size=1000)
    rule = await AlertRule.create(name="bench-offline", kind="offline", severity=Severity.MAJOR)
    await Alert.bulk_create([Alert(rule=rule, kind="offline", device_id=f"bench-{i:05d}", severity=Severity.MAJOR,
                                   live_key=f"{rule.id}:bench-{i:05d}", summary="offline", raised_at=now,
                                   last_true_at=now) for i in range(min(500, n))], batch_size=1000)


class Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


async def scrape_once() -> tuple[float, int]:
    started = time.perf_counter()
    view = LivenessView(datetime.now(UTC), Hearing(timedelta(hours=1)), Timing())
    families = await DeviceFigures.families_at(view) + await alert_families()
    registry = CollectorRegistry()
    registry.register(Families(families))
    text = generate_latest(registry)
    return time.perf_counter() - started, len(text)


async def run(devices: int, db: str, scrapes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if db == "sqlite":
            url = f"sqlite://{Path(tmp) / 'bench.sqlite3'}"
            await bench(url, devices, scrapes, db)
        else:
            async with fresh_database() as url:
                await bench(url, devices, scrapes, db)


async def bench(url: str, devices: int, scrapes: int, db: str) -> None:
    from fleet.settings import Settings
    async with database(Settings(database_url=url)):
        await populate(devices, datetime.now(UTC))
        await scrape_once()  # warm
        times, size = [], 0
        for _ in range(scrapes):
            seconds, size = await scrape_once()
            times.append(seconds * 1000)
        states: dict[str, float] = {}
        for family in await DeviceFigures.families_at(LivenessView(datetime.now(UTC), Hearing(timedelta(hours=1)),
                                                                   Timing())):
            if family.name == "fleet_devices":
                for sample in family.samples:
                    states[sample.labels["state"]] = states.get(sample.labels["state"], 0) + sample.value
        print("devices by state:", {state: int(n) for state, n in sorted(states.items())})
        times.sort()
        p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        print(f"{db}: {devices} devices, {scrapes} scrapes: p50 {statistics.median(times):.1f} ms, "
              f"p99 {p99:.1f} ms, {size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.devices, args.db, args.scrapes))


if __name__ == "__main__":
    main()
