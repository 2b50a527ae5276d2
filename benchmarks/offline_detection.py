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

With --live-devices N --live-rate R, N other devices (ids `live-...`, in their own child processes,
never stopped) stay connected throughout and publish as live devices do: R telemetry messages a
second in total (round robin), and each its health every 30 s on top (N / 30 msg/s). The broker is
then never idle, as in a city. The subscriber also counts their messages: the rate it saw while the
stopped devices' wills were awaited is printed with the figures. The wills' arrival bursts (gaps >
0.5 s) are printed too: the broker's keepalive scan shows there. The devices connect together, so
their keepalive cycles are in phase and one run sees one or two of the broker's scans:
--connect-spread-s S starts the device processes one after the other over S seconds (S = K: their
cycles spread over all of K, as in a city) and stops them in a shuffled order; --runs N repeats the
whole measurement (fresh broker, fresh database) and pools the devices of all runs in the figures.

With --broker embedded the fleet runs its own embedded broker (amqtt; no FLEET_MQTT_URL, as the
demo runs) instead of the private Mosquitto: every device is registered and given its MQTT account
through the fleet's API first, each device process connects from a loopback address of its own
(the broker bounds new connections per address), and the will watcher logs in as the fleet's own
account (the only one that may read every device's topics; see `fleet_login`). A missing will is
then reported, not an error: the fleet's silent verdict (3 x the 30 s health period) still comes.

    .venv/bin/python benchmarks/offline_detection.py [--devices 200] [--keepalive 10] [--postgres]
        [--live-devices 200 --live-rate 40] [--connect-spread-s 10] [--runs 5] [--broker embedded]
"""

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import random
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
LIVE_PER_PROCESS = 50
PERIOD_S = 30  # the devices' health period: the fleet's own silent verdict would come at 3 x 30 s


# a device's login: (password, source address) on the embedded broker, which checks accounts and
# bounds new connections per remote address; None on the open Mosquitto
Login = tuple[str, str] | None


def connect_devices(port: int, ids: Sequence[str], keepalive: int, ses: int,
                    logins: Sequence[Login] | None = None) -> list[tuple[str, mqtt.Client]]:
    """`ids` as devices of our contract: each connected with its will, its retained birth sent."""
    clients: list[tuple[str, mqtt.Client]] = []
    for n, device_id in enumerate(ids):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
        client.will_set(f"ioc/v1/d/{device_id}/death",
                        json.dumps({"v": 1, "ses": ses, "ts": None, "reason": "lost"}), qos=1, retain=True)
        login = logins[n] if logins else None
        if login is not None:
            client.username_pw_set(device_id, login[0])
        client.connect("127.0.0.1", port, keepalive=keepalive, bind_address=login[1] if login else "")
        client.loop_start()
        birth = {"v": 1, "ses": ses, "ts": None, "kind": "pi", "fw": "1.0.0", "roles": ["sim"],
                 "boot": {"n": 1, "reason": "start"}, "period_s": PERIOD_S, "next_seq": 0}
        client.publish(f"ioc/v1/d/{device_id}/birth", json.dumps(birth), qos=1, retain=True).wait_for_publish(60)
        clients.append((device_id, client))
    return clients


def run_devices(port: int, ids: Sequence[str], keepalive: int, ses: int, ready: "Queue[int]",
                logins: Sequence[Login] | None = None) -> None:
    """A child process: `ids` as devices of our contract, until stopped."""
    clients = connect_devices(port, ids, keepalive, ses, logins)
    ready.put(len(clients))
    seq = 0
    while True:
        time.sleep(PERIOD_S)
        for device_id, client in clients:
            health = {"v": 1, "ses": ses, "seq": seq, "ts": None, "up_s": PERIOD_S * (seq + 1), "fw": "1.0.0"}
            client.publish(f"ioc/v1/d/{device_id}/health", json.dumps(health), qos=1)
        seq += 1


def run_live_devices(port: int, ids: Sequence[str], keepalive: int, ses: int, rate: float,
                     ready: "Queue[int]", logins: Sequence[Login] | None = None) -> None:
    """A child process: `ids` as devices that stay alive, `rate` messages a second between them.

    Telemetry round robin, one message every 1 / rate s; each device's health every PERIOD_S on
    top; one sequence per device over both, as the contract numbers a device's messages.
    """
    clients = connect_devices(port, ids, keepalive, ses, logins)
    ready.put(len(clients))
    seq = [0] * len(clients)
    start = time.monotonic()
    next_health = [start + PERIOD_S * (n + 1) / len(clients) for n in range(len(clients))]
    sent = 0
    while True:
        sent += 1
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        n = sent % len(clients)
        device_id, client = clients[n]
        reading = {"v": 1, "ses": ses, "seq": seq[n], "ts": None, "role": "sim", "r": {"level": float(sent % 97)}}
        client.publish(f"ioc/v1/d/{device_id}/telemetry", json.dumps(reading), qos=1)
        seq[n] += 1
        now = time.monotonic()
        for m, due in enumerate(next_health):
            if now >= due:
                device_id, client = clients[m]
                health = {"v": 1, "ses": ses, "seq": seq[m], "ts": None, "up_s": round(now - start), "fw": "1.0.0"}
                client.publish(f"ioc/v1/d/{device_id}/health", json.dumps(health), qos=1)
                seq[m] += 1
                next_health[m] = due + PERIOD_S


class WillWatcher:
    """The baseline: a plain subscriber noting when each device's (live, not retained) will arrives."""

    def __init__(self, port: int, login: tuple[str, str, str] | None = None) -> None:
        """`login`: (user, password, client id) on a broker that checks accounts; blocks until subscribed."""
        self.seen: dict[str, float] = {}
        self.live: list[float] = []  # arrival times of the live devices' messages
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=login[2] if login else "bench-will-watcher")
        if login:
            self.client.username_pw_set(login[0], login[1])
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()
        self.client.subscribe([("ioc/v1/d/+/death", 1), ("ioc/v1/d/+/telemetry", 0), ("ioc/v1/d/+/health", 0)])
        if not subscribed.wait(10):
            raise RuntimeError("the will watcher could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain or not msg.payload:
            return
        at = time.time()
        device_id = msg.topic.split("/")[3]
        if not msg.topic.endswith("/death"):
            if device_id.startswith("live-"):
                with self._lock:
                    self.live.append(at)
            return
        with self._lock:
            self.seen.setdefault(device_id, at)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def figures(values: list[float]) -> str:
    if not values:
        return "none (n=0)"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return (f"p50 {statistics.median(ordered):6.2f} s   p99 {p99:6.2f} s   max {ordered[-1]:6.2f} s"
            f"   min {ordered[0]:6.2f} s   (n={len(ordered)})")


def bursts(arrivals: list[float]) -> list[tuple[float, int]]:
    """Arrival times grouped where they lie > 0.5 s apart: (first arrival, how many) per group."""
    groups: list[tuple[float, int]] = []
    last = None
    for at in sorted(arrivals):
        if last is None or at - last > 0.5:
            groups.append((at, 1))
        else:
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        last = at
    return groups


async def enroll_all(http: Any, ids: Sequence[str], subnet: str, per_process: int) -> list[Login]:
    """Register each device and issue its MQTT account through the fleet's API (as a technician
    does); each device process gets a loopback source address of its own (`subnet`.1, .2, ...), as
    devices in a city come from different addresses and the embedded broker bounds new
    connections per address (docs/identity.md, "The embedded broker under load")."""
    from tests.support.fleet import enroll

    limit = asyncio.Semaphore(4)  # the API hashes each password (scrypt) off the loop

    async def one(n: int, device_id: str) -> Login:
        async with limit:
            mqtt_login = await enroll(http, device_id, "pi", "tan-phu")
        return mqtt_login["password"], f"{subnet}.{n // per_process + 1}"

    return list(await asyncio.gather(*(one(n, device_id) for n, device_id in enumerate(ids))))


def fleet_login(http: Any) -> tuple[str, str, str]:
    """The will watcher's login on the embedded broker: the fleet's own account.

    Only that account may read other devices' topics (contract/acl.py). Its password is made
    fresh at each start and never shown (docs/identity.md); this benchmark runs the fleet in its
    own process and takes it from there. Its client id is the fleet's second one (the `-accounts`
    twin, which the embedded broker accepts for this account and the fleet itself uses only on
    Mosquitto), so the fleet's ingest session is left alone. Nothing in the broker is loosened.
    """
    runtime = http.app.state.runtime
    target = runtime.link.target
    assert target.username and target.password
    return target.username, target.password.get_secret_value(), f"{runtime.settings.mqtt_client_id}-accounts"


async def measure(backend: str, database_url: str, devices: int, keepalive: int, poll_s: float,
                  spread_s: float, workdir: Path, connect_spread_s: float = 0.0, live_devices: int = 0,
                  live_rate: float = 0.0, broker_kind: str = "mosquitto") -> tuple[dict[str, list[float]], list[str]]:
    from tests.support.fleet import fleet_settings, running_fleet
    from tests.support.mosquitto import Mosquitto

    embedded = broker_kind == "embedded"
    broker: Mosquitto | None = None
    if embedded:  # no FLEET_MQTT_URL: the fleet starts its own broker, with its default bounds
        settings = fleet_settings(database_url, None)
        port = settings.embedded_broker_port
    else:
        broker = Mosquitto(workdir / f"mqtt-{backend}")
        broker.start()
        settings = fleet_settings(database_url, broker.url)
        port = broker.port
    context = multiprocessing.get_context("spawn")  # no fork of a process running threads and a loop
    procs: list[BaseProcess] = []
    procs_live: list[BaseProcess] = []  # never stopped: the live load
    watcher: WillWatcher | None = None if embedded else WillWatcher(port)
    try:
        async with running_fleet(settings) as http:
            ids = [f"off-{backend}-{n:04d}" for n in range(devices)]
            live_ids = [f"live-{backend}-{n:04d}" for n in range(live_devices)]
            logins: list[Login] = [None] * devices
            live_logins: list[Login] = [None] * live_devices
            if embedded:
                # its broker shares the loop with this coroutine: the watcher's blocking subscribe in a thread
                watcher = await asyncio.to_thread(WillWatcher, port, fleet_login(http))
                logins = await enroll_all(http, ids, "127.0.1", PER_PROCESS)
                live_logins = await enroll_all(http, live_ids, "127.0.2", LIVE_PER_PROCESS)
            assert watcher is not None
            ready: Queue[int] = context.Queue()
            for start in range(0, devices, PER_PROCESS):
                child = context.Process(target=run_devices, daemon=True,
                                        args=(port, ids[start:start + PER_PROCESS], keepalive, 1, ready,
                                              logins[start:start + PER_PROCESS]))
                child.start()
                procs.append(child)
                if connect_spread_s:
                    await asyncio.sleep(connect_spread_s / -(-devices // PER_PROCESS))
            live_procs: list[BaseProcess] = []
            for start in range(0, live_devices, LIVE_PER_PROCESS):
                part = live_ids[start:start + LIVE_PER_PROCESS]
                child = context.Process(target=run_live_devices, daemon=True,
                                        args=(port, part, keepalive, 1, live_rate * len(part) / live_devices,
                                              ready, live_logins[start:start + LIVE_PER_PROCESS]))
                child.start()
                live_procs.append(child)
            procs_live.extend(live_procs)
            for _ in procs + live_procs:
                await asyncio.to_thread(ready.get, True, 120)

            async def online_count() -> int:
                response = await http.get("/api/devices", params={"state": "online", "limit": 1})
                response.raise_for_status()
                return int(response.headers["X-Total-Count"])

            deadline = time.monotonic() + 60
            while (count := await online_count()) < devices + live_devices:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {count}/{devices + live_devices} devices online in the fleet")
                await asyncio.sleep(0.2)
            live_note = (f" (+ {live_devices} live devices in {len(live_procs)} processes, {live_rate:g} msg/s)"
                         if live_devices else "")
            print(f"[{backend}, {broker_kind}] {devices} devices online in {len(procs)} processes{live_note}; "
                  f"stopping them (SIGSTOP) over {spread_s:g} s", flush=True)
            stopped_at: dict[str, float] = {}

            async def stop_all() -> None:
                # spread over the stop window: a device vanishes at any moment of its keepalive cycle
                order = list(range(len(procs)))
                if connect_spread_s:  # else a process's stop would follow its connect by the same time
                    random.Random(13).shuffle(order)
                for index in order:
                    proc = procs[index]
                    assert proc.pid is not None
                    at = time.time()
                    os.kill(proc.pid, signal.SIGSTOP)
                    for device_id in ids[index * PER_PROCESS:(index + 1) * PER_PROCESS]:
                        stopped_at[device_id] = at
                    await asyncio.sleep(spread_s / len(procs))

            stopping = asyncio.create_task(stop_all(), name="stop-devices")

            offline_at: dict[str, float] = {}
            # on the embedded broker the fleet's own silent verdict may be the only one (docs/ops.md)
            wait_s = 3 * keepalive + 30 if not embedded else (
                (settings.silent_after_periods + 1) * PERIOD_S + settings.presence_sweep_s + 30)
            deadline = time.monotonic() + spread_s + wait_s
            while len(offline_at) < devices and time.monotonic() < deadline:
                response = await http.get("/api/devices", params={"state": "offline", "limit": 1000})
                at = time.time()
                response.raise_for_status()
                for device in response.json():
                    offline_at.setdefault(device["id"], at)
                await asyncio.sleep(poll_s)
            await stopping
            if len(offline_at) < devices:
                raise RuntimeError(f"only {len(offline_at)}/{devices} shown offline within {wait_s:g} s")
            reasons = {d["state_reason"] for d in
                       (await http.get("/api/devices", params={"state": "offline", "limit": 1000})).json()}
            missing_wills = [i for i in ids if i not in watcher.seen]
            if missing_wills and not embedded:
                raise RuntimeError(f"{len(missing_wills)} wills never reached the subscriber")
            print(f"[{backend}, {broker_kind}] all offline; reasons {sorted(str(r) for r in reasons)}; "
                  f"{devices - len(missing_wills)}/{devices} wills seen", flush=True)
            lost_live = [d["id"] for d in
                         (await http.get("/api/devices", params={"state": "offline", "limit": 1000})).json()
                         if d["id"].startswith("live-")]
            if lost_live:
                raise RuntimeError(f"{len(lost_live)} live devices went offline: the load was not carried")
            notes: list[str] = []
            if missing_wills:
                notes.append(f"{len(missing_wills)}/{devices} wills never reached the subscriber, "
                             f"{max(offline_at.values()) - min(stopped_at.values()):.1f} s after the first stop")
            wills = [watcher.seen[i] for i in ids if i in watcher.seen]
            first_stop = min(stopped_at.values())
            last_will = max(wills) if wills else max(offline_at.values())
            if live_devices:
                with watcher._lock:
                    seen_live = sum(1 for at in watcher.live if first_stop <= at <= last_will)
                notes.append(f"live load: {live_devices} devices, {live_rate:g} msg/s of telemetry asked "
                             f"+ {live_devices / PERIOD_S:.1f} msg/s of health, "
                             f"{seen_live / (last_will - first_stop):.1f} msg/s received by the subscriber "
                             f"from the first stop to the last will")
            groups = bursts(wills)
            gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(groups)]
            if groups:
                notes.append(f"wills in {len(groups)} bursts of {', '.join(str(n) for _, n in groups)}; "
                             f"first arrivals apart: {', '.join(f'{g:.2f}' for g in gaps)} s")
            measured = {
                "will": [watcher.seen[i] - stopped_at[i] for i in ids if i in watcher.seen],
                "fleet": [offline_at[i] - stopped_at[i] for i in ids],
                "own": [offline_at[i] - watcher.seen[i] for i in ids if i in watcher.seen],
            }
            if missing_wills:  # was it the broker or the watcher? Close the sockets: a will must come now
                killed_at = time.time()
                for proc in procs:
                    assert proc.pid is not None
                    os.kill(proc.pid, signal.SIGKILL)
                for _ in range(150):  # up to 15 s
                    if all(i in watcher.seen for i in missing_wills):
                        break
                    await asyncio.sleep(0.1)
                late = [watcher.seen[i] - killed_at for i in missing_wills if i in watcher.seen]
                notes.append(f"then SIGKILL of the stopped processes (the kernel closes their sockets): {len(late)}/"
                             f"{len(missing_wills)} of those wills reached the subscriber"
                             + (f", {max(late):.2f} s after the kill at the latest" if late else " within 15 s"))
            return measured, notes
    finally:
        if watcher is not None:
            watcher.close()
        for proc in procs + procs_live:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)  # works on a stopped process
                proc.join(10)
        if broker is not None:
            broker.kill()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--keepalive", type=int, default=10, help="the devices' MQTT keepalive K, seconds")
    parser.add_argument("--poll-s", type=float, default=0.1, help="how often the device list is asked")
    parser.add_argument("--spread-s", type=float, default=None,
                        help="stop the processes one after the other over this many seconds (default K)")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--broker", choices=("mosquitto", "embedded"), default="mosquitto",
                        help="a private Mosquitto (FLEET_MQTT_URL, an open broker), or the fleet's own embedded "
                             "broker (no FLEET_MQTT_URL: devices enrolled through the API with their own accounts)")
    parser.add_argument("--connect-spread-s", type=float, default=0.0,
                        help="start the device processes one after the other over this many seconds (their "
                             "keepalive cycles then differ; the stops then go in a shuffled order)")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the measurement this many times; the figures pool every run's devices")
    parser.add_argument("--live-devices", type=int, default=0,
                        help="other devices that stay connected and publish throughout (never stopped)")
    parser.add_argument("--live-rate", type=float, default=20.0,
                        help="telemetry messages a second the live devices publish in total (their health, "
                             "every 30 s each, comes on top)")
    args = parser.parse_args()
    from tests.support.postgres import fresh_database

    print("command: .venv/bin/python " + " ".join(sys.argv), flush=True)
    target = 1.5 * args.keepalive
    spread_s = args.keepalive if args.spread_s is None else args.spread_s
    if args.live_devices < 0 or (args.live_devices and args.live_rate <= 0):
        parser.error("--live-devices must be >= 0, and --live-rate > 0 with live devices")
    live: dict[str, Any] = {"live_devices": args.live_devices, "live_rate": args.live_rate,
                            "connect_spread_s": args.connect_spread_s, "broker_kind": args.broker}
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    results: dict[str, tuple[dict[str, list[float]], list[str]]] = {}

    def pool(backend: str, run: int, got: tuple[dict[str, list[float]], list[str]]) -> None:
        figs, notes = results.setdefault(backend, ({}, []))
        for key, values in got[0].items():
            figs.setdefault(key, []).extend(values)
        notes.extend(f"{'run ' + str(run + 1) + ': ' if args.runs > 1 else ''}{note}" for note in got[1])

    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        for run in range(args.runs):  # each run on a fresh broker and a fresh database
            workdir = Path(tmp) / f"run{run}"
            workdir.mkdir()
            pool("sqlite", run, await measure("sqlite", f"sqlite://{workdir}/fleet.sqlite3", args.devices,
                                              args.keepalive, args.poll_s, spread_s, workdir, **live))
            if args.postgres:
                async with fresh_database() as url:
                    pool("postgres", run, await measure("postgres", url, args.devices, args.keepalive,
                                                        args.poll_s, spread_s, workdir, **live))
    runs = f" x {args.runs} runs" if args.runs > 1 else ""
    connects = f"connects spread over {args.connect_spread_s:g} s; " if args.connect_spread_s else ""
    print(f"\n{args.devices}{runs} devices stopped without DISCONNECT (SIGSTOP), keepalive K = {args.keepalive} s, "
          f"target p99 <= 1.5 x K = {target:.1f} s; {connects}stops spread over {spread_s:g} s; device list polled "
          f"every {args.poll_s} s; broker: {args.broker}")
    if args.live_devices:
        print(f"live load: {args.live_devices} other devices connected throughout, {args.live_rate:g} msg/s of "
              f"telemetry in total + their health every {PERIOD_S} s")
    for backend, (figs, notes) in results.items():
        p99 = sorted(figs["fleet"])[min(len(figs["fleet"]) - 1, max(0, round(0.99 * len(figs["fleet"])) - 1))]
        print(f"{backend}:")
        print(f"  baseline, broker's will at a subscriber : {figures(figs['will'])}")
        print(f"  fleet shows offline (stop -> API)       : {figures(figs['fleet'])}"
              f"   {'MEETS' if p99 <= target else 'MISSES'} target")
        print(f"  fleet's own part (API - will)           : {figures(figs['own'])}")
        for note in notes:
            print(f"  {note}")


if __name__ == "__main__":
    asyncio.run(main())
