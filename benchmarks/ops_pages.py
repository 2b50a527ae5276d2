"""Are the ops pages fast at 10,000 devices? Response times of the overview, the device list, the map
and the GIS layer, against `GET /healthz` measured in the same run.

The database is seeded with bulk inserts: N devices over 9 wards with coordinates, most online and
heard recently, some stale, some offline (a death, or the fleet's `silent` verdict), each with
its last health and `--health` stored health rows, presence changes, and a few open alerts. The
fleet runs whole in this process (uvicorn, the ingest on a private Mosquitto, so the fleet hears
the broker and the states are real); each URL is asked `--requests` times one after the other
after 3 warm-up requests, by a client logged in as a person (the pages read the session cookie).
A route that answers 404 is reported as not built yet.

    .venv/bin/python benchmarks/ops_pages.py [--devices 10000] [--requests 40] [--postgres]
"""

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.ingest.silence import unix_ms
from fleet.models import Device, DeviceStatus, HealthRecord
from fleet.ops.models import Alert, AlertRule, AlertState, PresenceChange, Severity
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.postgres import fresh_database

WARDS = ["tan-phu", "tan-dong", "tan-binh", "tan-xuan", "tan-thien", "tien-thanh", "tan-thanh", "tien-hung",
         "city-centre"]
CHUNK = 1000  # rows per bulk insert


def targets() -> list[tuple[str, str, dict[str, Any]]]:
    """(label, path, params): the baseline first."""
    return [
        ("baseline GET /healthz", "/healthz", {}),
        ("overview /", "/", {}),
        ("GET /api/devices (first page, 200)", "/api/devices", {}),
        ("GET /api/devices?state=offline&ward=", "/api/devices", {"state": "offline", "ward": WARDS[2]}),
        ("device page /devices/{id}", "/devices/pi-00000", {}),
        ("map /map", "/map", {}),
        ("map /map?state=offline", "/map", {"state": "offline"}),
        ("GET /api/gis/devices.geojson", "/api/gis/devices.geojson", {}),
        ("GET /api/gis/devices.geojson?state=offline&ward=", "/api/gis/devices.geojson",
         {"state": "offline", "ward": WARDS[2]}),
    ]


async def seed(devices: int, health_per_device: int) -> dict[str, int]:
    rng = random.Random(13)
    now = datetime.now(UTC)
    rows: list[Device] = []
    health: list[HealthRecord] = []
    changes: list[PresenceChange] = []
    counts = {"online": 0, "stale": 0, "offline": 0}
    for n in range(devices):
        kind = "esp32" if n % 3 else "pi"
        # long periods: the mix of states holds for the whole run (with 30 s, a Pi seeded as heard 20 s
        # ago would turn silent during the timing, and the sweep would rewrite thousands of rows meanwhile)
        period = 900 if kind == "esp32" else 600
        roll = rng.random()
        state = "online" if roll < 0.85 else "stale" if roll < 0.90 else "offline"
        counts[state] += 1
        seen = now - timedelta(seconds=rng.uniform(0, period / 4) if state == "online" else
                               period * 2.5 if state == "stale" else rng.uniform(300, 86_400))
        died = state == "offline" and rng.random() < 0.7
        body = {"up_s": rng.randrange(60, 10**6), "fw": f"1.{n % 4}.0", "temp_c": round(rng.uniform(35, 75), 1),
                "heap_free": rng.randrange(20_000, 90_000), "rssi": -rng.randrange(40, 90), "queue": rng.randrange(5)}
        device_id = f"{kind}-{n:05d}"
        rows.append(Device(
            id=device_id, kind=kind, name=f"device {n}", ward=WARDS[n % len(WARDS)],
            latitude=11.53 + rng.uniform(-0.06, 0.06), longitude=106.89 + rng.uniform(-0.06, 0.06),
            status=DeviceStatus.ACTIVE, online=state != "offline", session=1, last_birth_at=seen - timedelta(hours=1),
            last_seen_at=seen, last_seen_ms=unix_ms(seen), health_period_s=period, fw=body["fw"],
            roles=["light"] if kind == "esp32" else ["camera"], last_health=body, last_health_at=seen,
            last_death_at=seen if died else None, last_death_reason="lost" if died else None,
            ended_session=1 if died else None, silenced_at=None if died or state != "offline" else seen,
            birth={"v": 1, "ses": 1, "kind": kind, "fw": body["fw"], "roles": []}))
        for k in range(health_per_device):
            health.append(HealthRecord(device_id=device_id, epoch=0, ses=1, seq=k, device_ts=None,
                                       received_at=seen - timedelta(seconds=period * k), data=body))
        changes.append(PresenceChange(device_id=device_id, at=seen - timedelta(hours=1), online=True, reason="birth"))
        if state == "offline":
            changes.append(PresenceChange(device_id=device_id, at=seen, online=False,
                                          reason="lost" if died else "silent"))
    for model, items in ((Device, rows), (HealthRecord, health), (PresenceChange, changes)):
        for start in range(0, len(items), CHUNK):
            await model.bulk_create(items[start:start + CHUNK])  # type: ignore[attr-defined]
    rule = await AlertRule.create(name="bench offline", kind="offline", params={"for_s": 300},
                                  severity=Severity.MAJOR)
    offline = [d for d in rows if not d.online][:40]
    await Alert.bulk_create([Alert(rule=rule, kind="offline", device_id=d.id, device_kind=d.kind, ward=d.ward,
                                   severity=Severity.MAJOR, state=AlertState.OPEN, live_key=f"{rule.id}:{d.id}",
                                   summary=f"{d.id} offline", raised_at=now, last_true_at=now) for d in offline])
    counts["health rows"] = len(health)
    counts["alerts"] = len(offline)
    return counts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def time_urls(http: httpx.AsyncClient, requests: int) -> list[tuple[str, str]]:
    lines = []
    for label, path, params in targets():
        first = await http.get(path, params=params)
        if first.status_code == 404:
            lines.append((label, "not built yet (404)"))
            continue
        if first.status_code != 200:
            raise RuntimeError(f"{label}: {first.status_code} {first.text[:200]}")
        for _ in range(2):
            await http.get(path, params=params)
        times = []
        size = len(first.content)
        for _ in range(requests):
            start = time.perf_counter()
            response = await http.get(path, params=params)
            times.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
        lines.append((label, f"p50 {statistics.median(times):7.1f} ms   p99 {percentile(times, 0.99):7.1f} ms"
                             f"   ({size:,} bytes)"))
    return lines


async def measure(backend: str, database_url: str, devices: int, health: int, requests: int,
                  workdir: Path) -> list[tuple[str, str]]:
    broker = Mosquitto(workdir / f"mqtt-{backend}")
    broker.start()
    try:
        async with running_fleet(fleet_settings(database_url, broker.url)) as api:
            start = time.perf_counter()
            counts = await seed(devices, health)
            print(f"[{backend}] seeded {devices:,} devices in {time.perf_counter() - start:.1f} s: {counts}",
                  flush=True)
            async with httpx.AsyncClient(base_url=str(api.base_url), timeout=60) as http:
                link = (await api.post("/api/auth/login-link")).json()["url"]
                redeemed = await http.post("/login/link", data={"code": link.split("code=")[1]},
                                           headers={"Origin": str(api.base_url).rstrip("/")})
                if redeemed.status_code != 303:
                    raise RuntimeError(f"login: {redeemed.status_code}")
                http.headers["Authorization"] = api.headers["Authorization"]  # the API routes take the token
                shown = await http.get("/api/devices", params={"state": "offline", "limit": 1})
                print(f"[{backend}] the fleet shows {shown.headers.get('X-Total-Count')} offline", flush=True)
                return await time_urls(http, requests)
    finally:
        broker.kill()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--health", type=int, default=3, help="stored health rows per device")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per URL")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    args = parser.parse_args()
    print("command: .venv/bin/python " + " ".join(sys.argv), flush=True)
    results: dict[str, list[tuple[str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        results["sqlite"] = await measure("sqlite", f"sqlite://{tmp}/fleet.sqlite3", args.devices, args.health,
                                          args.requests, Path(tmp))
        if args.postgres:
            async with fresh_database() as url:
                results["postgres"] = await measure("postgres", url, args.devices, args.health, args.requests,
                                                    Path(tmp))
    print(f"\n{args.devices:,} devices, {args.requests} sequential requests per URL after 3 warm-ups:")
    for backend, lines in results.items():
        print(f"{backend}:")
        for label, figure in lines:
            print(f"  {label:<50} {figure}")


if __name__ == "__main__":
    asyncio.run(main())
