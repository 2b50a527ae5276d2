"""How soon does the fleet show a vanished device offline? Devices that stop without a DISCONNECT.

N devices speak our contract (docs/protocol.md, "Presence": a retained birth, a retained will
`death` with reason `lost`, keepalive K, health every `period_s`) from paho clients in child
processes (10 devices per process) against a private Mosquitto and the real fleet (the whole
service in this process, as `fleet serve` runs it: uvicorn, ingest, sweep) on SQLite and, with
--postgres, PostgreSQL. Once the fleet shows them all online, the child processes are stopped
one after the other over --spread-s (default K: devices vanish at any point of their keepalive
cycle) with SIGSTOP: its sockets stay open and silent, as with a device that lost power or its link
(a SIGKILL would close the sockets, the kernel would answer for the dead process, and the broker
would see the loss at once, which is not the case measured here). The broker closes a connection
it has heard nothing on for 1.5 x K and publishes its will; the fleet stores the death and shows
the device offline.

Per device, from its process's SIGSTOP:
- baseline: the will as seen by a plain paho subscriber of `ioc/v1/d/+/death` (the broker's part);
- fleet: the first answer of `GET /api/devices?state=offline` (polled every --poll-s) listing it;
- the fleet's own part: fleet minus baseline, per device.
Target (issue 13): p99 of "fleet" <= 1.5 x K. A device's last packet before the stop lies up to K
earlier (paho pings every K when idle), so the broker's will comes 0.5 K to 1.5 K after the stop.

    .venv/bin/python benchmarks/offline_detection.py [--devices 200] [--keepalive 10] [--postgres]
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PER_PROCESS = 10
PERIOD_S = 30  # the devices' health period: the fleet's own silent verdict would come at 3 x 30 s


def run_devices(port: int, ids: Sequence[str], keepalive: int, ses: int, ready: "Queue[int]") -> None:
    """A child process: `ids` as devices of our contract, until stopped."""
    clients: list[tuple[str, mqtt.Client]] = []
    for device_id in ids:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
        client.will_set(f"ioc/v1/d/{device_id}/death",
                        json.dumps({"v": 1, "ses": ses, "ts": None, "reason": "lost"}), qos=1, retain=True)
        client.connect("127.0.0.1", port, keepalive=keepalive)
        client.loop_start()
        birth = {"v": 1, "ses": ses, "ts": None, "kind": "pi", "fw": "1.0.0", "roles": ["sim"],
                 "boot": {"n": 1, "reason": "start"}, "period_s": PERIOD_S, "next_seq": 0}
        client.publish(f"ioc/v1/d/{device_id}/birth", json.dumps(birth), qos=1, retain=True).wait_for_publish(60)
        clients.append((device_id, client))
    ready.put(len(clients))
    seq = 0
    while True:
        time.sleep(PERIOD_S)
        for device_id, client in clients:
            health = {"v": 1, "ses": ses, "seq": seq, "ts": None, "up_s": PERIOD_S * (seq + 1), "fw": "1.0.0"}
            client.publish(f"ioc/v1/d/{device_id}/health", json.dumps(health), qos=1)
        seq += 1


class WillWatcher:
    """The baseline: a plain subscriber noting when each device's (live, not retained) will arrives."""

    def __init__(self, port: int) -> None:
        self.seen: dict[str, float] = {}
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-will-watcher")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()
        self.client.subscribe("ioc/v1/d/+/death", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("the will watcher could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain or not msg.payload:
            return
        at = time.time()
        device_id = msg.topic.split("/")[3]
        with self._lock:
            self.seen.setdefault(device_id, at)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def figures(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return (f"p50 {statistics.median(ordered):6.2f} s   p99 {p99:6.2f} s   max {ordered[-1]:6.2f} s"
            f"   min {ordered[0]:6.2f} s   (n={len(ordered)})")


async def measure(backend: str, database_url: str, devices: int, keepalive: int, poll_s: float,
                  spread_s: float, workdir: Path) -> dict[str, list[float]]:
    from tests.support.fleet import fleet_settings, running_fleet
    from tests.support.mosquitto import Mosquitto

    broker = Mosquitto(workdir / f"mqtt-{backend}")
    broker.start()
    context = multiprocessing.get_context("spawn")  # no fork of a process running threads and a loop
    procs: list[BaseProcess] = []
    watcher = WillWatcher(broker.port)
    try:
        async with running_fleet(fleet_settings(database_url, broker.url)) as http:
            ids = [f"off-{backend}-{n:04d}" for n in range(devices)]
            ready: Queue[int] = context.Queue()
            for start in range(0, devices, PER_PROCESS):
                child = context.Process(target=run_devices, daemon=True,
                                        args=(broker.port, ids[start:start + PER_PROCESS], keepalive, 1, ready))
                child.start()
                procs.append(child)
            for _ in procs:
                await asyncio.to_thread(ready.get, True, 120)

            async def online_count() -> int:
                response = await http.get("/api/devices", params={"state": "online", "limit": 1})
                response.raise_for_status()
                return int(response.headers["X-Total-Count"])

            deadline = time.monotonic() + 60
            while (count := await online_count()) < devices:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {count}/{devices} devices online in the fleet")
                await asyncio.sleep(0.2)
            print(f"[{backend}] {devices} devices online in {len(procs)} processes; stopping them (SIGSTOP) "
                  f"over {spread_s:g} s", flush=True)
            stopped_at: dict[str, float] = {}

            async def stop_all() -> None:
                # spread over the stop window: a device vanishes at any moment of its keepalive cycle
                for index, proc in enumerate(procs):
                    assert proc.pid is not None
                    at = time.time()
                    os.kill(proc.pid, signal.SIGSTOP)
                    for device_id in ids[index * PER_PROCESS:(index + 1) * PER_PROCESS]:
                        stopped_at[device_id] = at
                    await asyncio.sleep(spread_s / len(procs))

            stopping = asyncio.create_task(stop_all(), name="stop-devices")

            offline_at: dict[str, float] = {}
            deadline = time.monotonic() + spread_s + 3 * keepalive + 30
            while len(offline_at) < devices and time.monotonic() < deadline:
                response = await http.get("/api/devices", params={"state": "offline", "limit": 1000})
                at = time.time()
                response.raise_for_status()
                for device in response.json():
                    offline_at.setdefault(device["id"], at)
                await asyncio.sleep(poll_s)
            await stopping
            if len(offline_at) < devices:
                raise RuntimeError(f"only {len(offline_at)}/{devices} shown offline within {3 * keepalive + 30} s")
            reasons = {d["state_reason"] for d in
                       (await http.get("/api/devices", params={"state": "offline", "limit": 1000})).json()}
            missing_wills = [i for i in ids if i not in watcher.seen]
            if missing_wills:
                raise RuntimeError(f"{len(missing_wills)} wills never reached the subscriber")
            print(f"[{backend}] all offline; reasons {sorted(str(r) for r in reasons)}", flush=True)
            return {
                "will": [watcher.seen[i] - stopped_at[i] for i in ids],
                "fleet": [offline_at[i] - stopped_at[i] for i in ids],
                "own": [offline_at[i] - watcher.seen[i] for i in ids],
            }
    finally:
        watcher.close()
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)  # works on a stopped process
                proc.join(10)
        broker.kill()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--keepalive", type=int, default=10, help="the devices' MQTT keepalive K, seconds")
    parser.add_argument("--poll-s", type=float, default=0.1, help="how often the device list is asked")
    parser.add_argument("--spread-s", type=float, default=None,
                        help="stop the processes one after the other over this many seconds (default K)")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    args = parser.parse_args()
    from tests.support.postgres import fresh_database

    print("command: .venv/bin/python " + " ".join(sys.argv), flush=True)
    target = 1.5 * args.keepalive
    spread_s = args.keepalive if args.spread_s is None else args.spread_s
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        results["sqlite"] = await measure("sqlite", f"sqlite://{tmp}/fleet.sqlite3", args.devices, args.keepalive,
                                          args.poll_s, spread_s, Path(tmp))
        if args.postgres:
            async with fresh_database() as url:
                results["postgres"] = await measure("postgres", url, args.devices, args.keepalive, args.poll_s,
                                                    spread_s, Path(tmp))
    print(f"\n{args.devices} devices stopped without DISCONNECT (SIGSTOP), keepalive K = {args.keepalive} s, "
          f"target p99 <= 1.5 x K = {target:.1f} s; stops spread over {spread_s:g} s; device list polled every "
          f"{args.poll_s} s")
    for backend, figs in results.items():
        p99 = sorted(figs["fleet"])[min(len(figs["fleet"]) - 1, round(0.99 * len(figs["fleet"])) - 1)]
        print(f"{backend}:")
        print(f"  baseline, broker's will at a subscriber : {figures(figs['will'])}")
        print(f"  fleet shows offline (stop -> API)       : {figures(figs['fleet'])}"
              f"   {'MEETS' if p99 <= target else 'MISSES'} target")
        print(f"  fleet's own part (API - will)           : {figures(figs['own'])}")


if __name__ == "__main__":
    asyncio.run(main())
