"""How fast does the rollout engine offer, and how soon does a bad release pause it?

A real fleet (fleet_services: the ingest, the engine task `fleet-rollouts` at its default 1 s
tick) on a private Mosquitto, two releases published through the fleet's own publish path
(signed with a fresh RSA-3072 key), and `--devices` simulated updaters (tests/support/ota_updaters.py:
a few asyncio MQTT connections, each speaking for many device ids, answering offers with
`ota/progress` as docs/ota.md's installers do).

1. Offers per minute: a one-phase rollout of a good release with `offers_per_min` far above what
   the engine can do, so the engine is the limit; from the rollout's start to the last offer
   received by the devices. Every device then confirms (end to end).
   Baseline, same run, same broker: the same number of offers of the same size published
   retained with QoS 1 by a bare aiomqtt client (the ceiling the broker and client set).
   Cited, not run: ThingsBoard sends 100 offers a minute by default, AWS IoT Jobs at most 1,000.
2. The limit holds: a rollout with `offers_per_min` = `--limit` for 70 s; the most offers in any
   60 s (from the engine's `offered_at`), and how they spread over the first 20 s.
3. From the first bad report to the auto-pause: a release whose trial crashes on every device
   (`rolled_back`, reason `crash`); phases [5, 100], max_failure_pct 5: the pause comes when more
   than 5 % of the devices offered have reported. Seconds from the first `rolled_back` published
   by a device to the pause the engine recorded (its `at`, same machine clock).

    .venv/bin/python benchmarks/ota_rollout.py [--devices 2000] [--herds 4] [--limit 1200] [--postgres]
"""

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.app import fleet_services
from fleet.models import Device, DeviceStatus
from fleet.ota.models import Release
from fleet.ota.releases import Releases
from fleet.ota.rollout_commands import Plan, Target, create_rollout
from fleet.ota.rollout_models import Rollout, RolloutDevice
from fleet.ota.rollouts import RolloutEngine
from fleet.ota.states import DeviceState, RolloutStatus
from fleet.settings import Settings
from tests.fleet.release_kit import ReleaseFolder, SigningKey, write_keys
from tests.support.mosquitto import Mosquitto
from tests.support.ota_updaters import Behaviour, SimDevice, herd
from tests.support.postgres import fresh_database

LIMITED_S = 70  # the rate-limited round runs this long
THINGSBOARD_DEFAULT_PER_MIN = 100  # cited: ThingsBoard's default OTA rate
AWS_IOT_JOBS_MAX_PER_MIN = 1000  # cited: AWS IoT Jobs' maximum rollout rate


def plan(release: str, **overrides: object) -> Plan:
    values: dict[str, object] = {
        "release": release, "target": Target(), "phases": [100.0], "soak_s": 3600.0, "max_failure_pct": 5.0,
        "online_within_s": 600, "offer_timeout_s": 3600, "max_boots": 2, "tolerance_pct": 25.0,
        "offers_per_min": 1_000_000, "windows": {}, "timezone": "UTC"}
    values.update(overrides)
    return Plan(**values)  # type: ignore[arg-type]


async def publish(releases: Releases, key: SigningKey, folder: Path, version: str) -> str:
    release = ReleaseFolder("esp32", version, {"app.mpy": b"app " + version.encode() * 400,
                                               "roles/light.mpy": b"light " * 600})
    path = folder / f"release-{version}.tar"
    path.write_bytes(release.tar(release.signed(key)))
    return (await releases.publish(path, "bench")).name


def say(what: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


async def wait(condition: object, what: str, timeout: float = 600) -> None:
    say(f"waiting for {what}")
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def baseline(port: int, count: int, payload: bytes) -> float:
    """Offers a minute a bare client publishes (retained, QoS 1, each awaited, 100 at a time)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-base-{uuid.uuid4().hex[:6]}",
                              max_inflight_messages=100) as client:
        gate = asyncio.Semaphore(100)

        async def one(i: int) -> None:
            async with gate:
                await client.publish(f"bench/offer/{i:05d}", payload, qos=1, retain=True)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - start
        await asyncio.gather(*(client.publish(f"bench/offer/{i:05d}", b"", qos=1, retain=True)
                               for i in range(count)))
    return count / elapsed * 60


def herd_process(port: int, ids: list[str], conn: Connection) -> None:
    """A separate process: one herd of simulated devices, steered and read through `conn`."""

    async def serve() -> None:
        devices = [SimDevice(device_id, period_s=30) for device_id in ids]
        async with herd(port, devices, own_topics=True, health_s=10.0, step_s=0.005) as flock:
            loop = asyncio.get_running_loop()
            conn.send("ready")
            while True:
                command, *rest = await loop.run_in_executor(None, conn.recv)
                if command == "behave":
                    flock.behaviours[rest[0]] = rest[1]
                    flock.first_bad_report_at = flock.first_bad_report_wall = None
                    conn.send("ok")
                elif command == "stats":
                    conn.send({"offers_seen": flock.offers_seen, "first_offer_wall": flock.first_offer_wall,
                               "last_offer_wall": flock.last_offer_wall,
                               "first_bad_report_wall": flock.first_bad_report_wall,
                               "errors": flock.errors[:3], "error_count": len(flock.errors)})
                elif command == "stop":
                    conn.send("stopped")
                    return

    asyncio.run(serve())


class Herds:
    """The simulated devices in `n` processes, one MQTT connection each."""

    def __init__(self, port: int, ids: list[str], n: int) -> None:
        size = -(-len(ids) // n)
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for start in range(0, len(ids), size):
            # spawned, not forked: the fleet's process has threads (paho, aiosqlite) and a running loop
            spawn = multiprocessing.get_context("spawn")
            parent, child = spawn.Pipe()
            proc = spawn.Process(target=herd_process, args=(port, ids[start:start + size], child))
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    async def ask(self, *command: object) -> list[Any]:
        def one(pipe: Connection) -> Any:
            pipe.send(command)
            return pipe.recv()

        return list(await asyncio.gather(*(asyncio.to_thread(one, p) for p in self.pipes)))

    async def ready(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(p.recv) for p in self.pipes))

    async def stats(self) -> dict[str, Any]:
        got = await self.ask("stats")
        bad = [g["first_bad_report_wall"] for g in got if g["first_bad_report_wall"] is not None]
        return {"offers_seen": sum(g["offers_seen"] for g in got),
                "last_offer_wall": max((g["last_offer_wall"] or 0) for g in got),
                "first_bad_report_wall": min(bad) if bad else None,
                "errors": [e for g in got for e in g["errors"]], "error_count": sum(g["error_count"] for g in got)}

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.ask("stop")
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


async def counts(rollout_id: int) -> dict[str, int]:
    rows = await RolloutDevice.filter(rollout_id=rollout_id).values_list("state", flat=True)
    found: dict[str, int] = {}
    for state in rows:
        found[str(state)] = found.get(str(state), 0) + 1
    return found


async def run(database_url: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    broker = Mosquitto(tmp / "mqtt", extra_conf="max_inflight_messages 1000\nmax_queued_messages 1000000\n")
    broker.start()
    key = SigningKey.new()
    settings = Settings(database_url=database_url, mqtt_url=broker.url, broker_accounts="none",
                        mqtt_client_id=f"bench-fleet-{uuid.uuid4().hex[:6]}", ota_dir=tmp / "ota",
                        ota_keys=write_keys(tmp / "keys.pem", key), public_url="http://fleet.example:8000")
    figures: dict[str, float] = {}
    try:
        async with fleet_services(settings) as runtime:
            engine = runtime.rollouts
            assert isinstance(engine, RolloutEngine)
            releases = Releases(settings)
            good = await publish(releases, key, tmp, "0.2.0")
            bad = await publish(releases, key, tmp, "0.3.0")
            other = await publish(releases, key, tmp, "0.4.0")
            devices = [SimDevice(f"bench-{i:05d}", period_s=30) for i in range(args.devices)]
            await Device.bulk_create([Device(id=d.device_id, kind="esp32", ward="tan-phu",
                                             status=DeviceStatus.REGISTERED) for d in devices], batch_size=1000)
            release = await Release.get(name=good)
            sample = await engine.releases.build_offer(release, devices[0].device_id, "r1-d0", "install")
            figures["offer_bytes"] = len(json.dumps(sample, separators=(",", ":")))
            figures["baseline_per_min"] = await baseline(broker.port, args.devices,
                                                         json.dumps(sample, separators=(",", ":")).encode())
            flocks = Herds(broker.port, [d.device_id for d in devices], args.herds)
            try:
                await flocks.ready()
                async def online() -> bool:
                    return bool(await Device.filter(online=True, id__startswith="bench-").count() == args.devices)

                await wait(online, "every simulated device online")

                # 1. offers a minute, engine-bound
                start = time.monotonic()
                started_wall = time.time()
                rollout = await create_rollout(plan(good), "bench")
                engine.nudge()

                async def all_offered() -> bool:
                    return bool((await flocks.stats())["offers_seen"] >= args.devices)

                await wait(all_offered, "every offer received")
                last = (await flocks.stats())["last_offer_wall"] - started_wall
                figures["offers_per_min"] = args.devices / last * 60
                figures["offer_s"] = last

                async def all_confirmed() -> bool:
                    return bool((await counts(rollout.id)).get("confirmed", 0) == args.devices)

                try:
                    await wait(all_confirmed, "every device confirmed", timeout=60)
                finally:
                    say(f"simulated devices' errors: {(await flocks.stats())['errors']}")
                figures["all_confirmed_s"] = time.monotonic() - start
                figures["ota_reports"] = runtime.stats.ota

                # 2. the limit holds: at most offers_per_min in any 60 s (the engine's own offered_at)
                limited = await create_rollout(plan(other, offers_per_min=args.limit), "bench")
                engine.nudge()
                await asyncio.sleep(LIMITED_S)
                times = sorted(row.offered_at.timestamp() for row in await RolloutDevice.filter(
                    rollout_id=limited.id, offered_at__isnull=False).only("id", "offered_at") if row.offered_at)
                figures["limited_offers"] = len(times)
                figures["limited_max_60s"] = max(bisect.bisect_right(times, t + 60) - i for i, t in enumerate(times))
                figures["limited_first_20s"] = bisect.bisect_right(times, times[0] + 20)
                await Rollout.filter(id=limited.id).update(status=RolloutStatus.ABORTED)

                # 3. first bad report -> auto-pause
                await flocks.ask("behave", bad, Behaviour(outcome="rolled_back", reason="crash", boots=4))
                crash = await create_rollout(plan(bad, phases=[5.0, 100.0], max_failure_pct=5.0), "bench")
                engine.nudge()

                async def paused() -> bool:
                    return await Rollout.filter(id=crash.id, status=RolloutStatus.PAUSED).exists()

                await wait(paused, "the auto-pause")
                reason = (await Rollout.get(id=crash.id)).pause_reason or {}
                first_bad = (await flocks.stats())["first_bad_report_wall"]
                figures["pause_after_first_bad_s"] = datetime.fromisoformat(reason["at"]).timestamp() - first_bad
                figures["pause_failed"] = reason["failed"]
                figures["pause_offered"] = reason["offered"]
                figures["phase0_size"] = crash.sizes[0]
                figures["crash_rolled_back"] = (await counts(crash.id)).get(DeviceState.ROLLED_BACK.value, 0)
                figures["engine_ticks"] = engine.ticks
            finally:
                await flocks.stop()
    finally:
        broker.kill()
    return figures


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("aiomqtt").setLevel(logging.ERROR)  # "pending publish calls" of the baseline client
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--herds", type=int, default=4, help="MQTT connections the simulated devices share")
    parser.add_argument("--limit", type=int, default=1200, help="offers_per_min of the rate-limited round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    results: list[dict[str, float]] = []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
            if args.postgres:
                async with fresh_database() as url:
                    figures = await run(url, args, Path(tmp))
            else:
                figures = await run(f"sqlite://{tmp}/fleet.sqlite3", args, Path(tmp))
        results.append(figures)
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()), flush=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"\nrollout to {args.devices:,} simulated devices on {args.herds} MQTT connections, {backend}, "
          f"median of {args.rounds}:")
    print(f"  offers per minute, engine-bound (1 s tick):   {med('offers_per_min'):>10,.0f}  "
          f"({args.devices:,} offers of {med('offer_bytes'):,.0f} B in {med('offer_s'):.2f} s)")
    print(f"  baseline, bare client, same offers:           {med('baseline_per_min'):>10,.0f}")
    print(f"  cited: ThingsBoard default {THINGSBOARD_DEFAULT_PER_MIN}/min, AWS IoT Jobs max "
          f"{AWS_IOT_JOBS_MAX_PER_MIN:,}/min")
    print(f"  every device confirmed after:                 {med('all_confirmed_s'):>10.1f} s "
          f"({med('ota_reports'):,.0f} ota/progress reports ingested)")
    print(f"  offers_per_min={args.limit}: most offers in any 60 s:  {med('limited_max_60s'):>7,.0f} "
          f"({med('limited_offers'):,.0f} in {LIMITED_S} s, {med('limited_first_20s'):,.0f} in the first 20 s)")
    print(f"  first bad report -> auto-pause:               {med('pause_after_first_bad_s'):>10.2f} s "
          f"(paused at {med('pause_failed'):.0f} failed of {med('pause_offered'):.0f} offered; "
          f"phase 1 = {med('phase0_size'):.0f} devices, max_failure_pct 5)")


if __name__ == "__main__":
    asyncio.run(main())
