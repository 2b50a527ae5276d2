"""10,000 devices connected at once (issue 15, must-have 8): the fleet's memory per device, the time
for all to be online in the fleet, and the device list and the ops overview at that size against
the same run's 100 devices.

Set-up, all private to the run: a Mosquitto on a free port (open: no accounts, so the fleet runs
with FLEET_BROKER_ACCOUNTS=none; per-device credentials are not what is counted here), a fresh
PostgreSQL database (with `--sqlite`, also a SQLite file), and a real `fleet serve` subprocess.
The devices are registered first, in bulk through the database (kind esp32, 9 wards, a position),
as a city's technicians register them before they are installed; their births then make them
active. So what grows with the count is what a live device costs the fleet, not a first sight.

Devices: `--processes` processes of asyncio raw-socket MQTT 3.1.1 clients, each device its own TCP
connection (client id = device id, clean session false, keepalive 30 s, the will a retained death
`lost`), subscribed to its `cmd` and `state/desired`, its retained birth (`period_s` 30,
`next_seq` 0) on CONNACK, then a numbered QoS 1 health every 30 s (the first at a random moment of
the first period, so the fleet gets an even ~333 msg/s) and a PINGREQ only when nothing was sent
for a keepalive. The file-descriptor limit is raised to its hard limit for this process (and so
for Mosquitto, started from it) and for every device process.

Steps: fleet up with 100 devices registered, the API warmed -> RSS (idle); 100 devices connect ->
all online -> RSS, the API timed; 9,900 more registered and connected -> time until the fleet
shows all 10,000 online -> one health period more -> RSS, the API timed again. Each URL is asked
`--requests` times one after the other (after 3 warm-ups), p50/p99 in ms; ratios are 10k / 100.
Memory per device = (RSS at 10,000 - RSS idle) / 10,000, for the fleet and for Mosquitto.

    .venv/bin/python benchmarks/devices_10k.py [--devices 10000] [--baseline 100] [--processes 4]
        [--requests 60] [--settle 35] [--sqlite] [--py-spy stacks.txt]

`--py-spy FILE` records the fleet's stacks (py-spy's raw format) during the timing at full size. One
such run at 10,000 devices (load ~10): of the fleet's samples, 30 % in the alert engine's turn over
every device (fleet/ops/engine.py AlertEngine.tick, every FLEET_OPS_TICK_S), 21 % in the ingest (19 %
in apply_batch's AlertEngine.judge_batch), 7 % in the device list route and 4 % in the overview.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import connect_packet, publish_packet, split_packets, subscribe_packet  # noqa: E402
from tests.support.mosquitto import Mosquitto, free_port  # noqa: E402
from tests.support.postgres import fresh_database  # noqa: E402

WARDS = ["tan-phu", "tan-dong", "tan-binh", "tan-xuan", "tan-thien", "tien-thanh", "tan-thanh", "tien-hung",
         "city-centre"]
KEEPALIVE_S = 30
PERIOD_S = 30
CONNECT_GATE = 64  # connections being opened at once per device process (Mosquitto's listen backlog)
PASSWORD = "streetlights at dusk 4217"


def load_average() -> str:
    return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    """The process's resident set, with its children's (uvicorn runs the fleet in one process)."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def device_id(n: int) -> str:
    return f"lamp-{n:05d}"


# --- the devices ------------------------------------------------------------------------------

class LightDevice(asyncio.Protocol):
    """One simulated light controller on its own connection."""

    def __init__(self, ident: str, ses: int, stats: dict[str, int]) -> None:
        self.ident = ident
        self.ses = ses
        self.seq = 0
        self.stats = stats
        self.base = f"ioc/v1/d/{ident}/".encode()
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.packet_id = 0
        self.last_write = 0.0
        self.next_health = 0.0
        self.started = time.monotonic()

    def _next_id(self) -> int:
        self.packet_id = self.packet_id % 65535 + 1
        return self.packet_id

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_write = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        will = (self.base + b"death", b'{"v":1,"ses":%d,"ts":null,"reason":"lost"}' % self.ses)
        self.write(connect_packet(self.ident, keepalive=KEEPALIVE_S, clean=False, will=will))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(f"{self.ident}: closed before CONNACK"))
        elif self.transport is not None:
            self.stats["lost"] += 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        buf = self.buf
        packets, pos = split_packets(buf)
        for kind, body in packets:
            packet = kind >> 4
            if packet == 2 and not self.connack.done():  # CONNACK
                self.connack.set_result(body[1])
            elif packet == 4:  # PUBACK
                self.stats["acked"] += 1
            elif packet == 3 and (kind >> 1) & 3:  # a command or desired state: acknowledge it
                topic_len = int.from_bytes(body[:2], "big")
                self.write(b"\x40\x02" + body[2 + topic_len:4 + topic_len])
                self.stats["received"] += 1
        self.buf = buf[pos:]

    def birth(self) -> bytes:
        body = {"v": 1, "ses": self.ses, "ts": int(time.time() * 1000), "kind": "esp32", "fw": "1.4.2",
                "roles": ["light"], "boot": {"n": 1, "reason": "power_on"}, "period_s": PERIOD_S, "next_seq": 0}
        return json.dumps(body, separators=(",", ":")).encode()

    def health(self) -> bytes:
        up = int(time.monotonic() - self.started)
        payload = (b'{"v":1,"ses":%d,"seq":%d,"ts":%d,"up_s":%d,"fw":"1.4.2","heap_free":%d,"heap_min":61000,'
                   b'"heap_max_block":30000,"rssi":-%d,"reset":"power_on","queue":0,"dropped":0,"reconnects":0,'
                   b'"loop_ms":3}' % (self.ses, self.seq, int(time.time() * 1000), up, 70000 + self.seq % 997,
                                      55 + self.seq % 20))
        self.seq += 1
        return payload

    def tick(self, now: float) -> None:
        if self.transport is None:
            return
        if now >= self.next_health:
            self.write(publish_packet(self.base + b"health", self.health(), self._next_id(), False))
            self.stats["health"] += 1
            self.next_health += PERIOD_S
        elif now - self.last_write >= KEEPALIVE_S:  # the broker allows 1.5 x keepalive
            self.write(b"\xc0\x00")  # PINGREQ
            self.stats["pings"] += 1


async def _open(device: LightDevice, port: int, gate: asyncio.Semaphore) -> bool:
    loop = asyncio.get_running_loop()
    async with gate:
        for attempt in range(30):
            try:
                await loop.create_connection(lambda: device, "127.0.0.1", port)
                code = await asyncio.wait_for(device.connack, 60)
                break
            except (OSError, TimeoutError, ConnectionError):
                device.stats["retries"] += 1
                if device.transport is not None:
                    device.transport.abort()
                device.transport = None
                device.connack = loop.create_future()
                await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))
        else:
            return False
    if code != 0:
        return False
    device.write(subscribe_packet(device._next_id(), [device.base + b"cmd", device.base + b"state/desired"]))
    device.write(publish_packet(device.base + b"birth", device.birth(), device._next_id(), True))
    device.next_health = time.monotonic() + random.uniform(1, PERIOD_S)
    return True


async def _devices_main(port: int, first: int, count: int, pipe: Pipe) -> None:
    stats = {"acked": 0, "health": 0, "pings": 0, "lost": 0, "retries": 0, "received": 0}
    # a device without a counter starts it at random in [2^47, 2^48) (docs/protocol.md, "Streams")
    devices = [LightDevice(device_id(n), (1 << 47) | random.getrandbits(47), stats)
               for n in range(first, first + count)]
    gate = asyncio.Semaphore(CONNECT_GATE)
    began = time.monotonic()
    opened = await asyncio.gather(*(_open(d, port, gate) for d in devices))
    pipe.send({"connected": sum(opened), "failed": len(opened) - sum(opened), "seconds": time.monotonic() - began,
               **stats})
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(pipe.fileno(), stop.set)
    while not stop.is_set():
        now = time.monotonic()
        for device in devices:
            device.tick(now)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
    loop.remove_reader(pipe.fileno())
    pipe.recv()
    alive = sum(1 for d in devices if d.transport is not None)
    for device in devices:  # a clean stop: DISCONNECT, so no 10,000 wills at the end
        device.write(b"\xe0\x00")
        transport, device.transport = device.transport, None
        if transport is not None:
            transport.close()
    await asyncio.sleep(0.5)
    pipe.send({"alive_at_stop": alive, **stats})


def _devices_entry(port: int, first: int, count: int, pipe: Pipe) -> None:
    raise_fd_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_devices_main(port, first, count, pipe))


@dataclass
class DeviceProcesses:
    """Device ids [first, first + count) spread over `processes` processes."""

    port: int
    first: int
    count: int
    processes: int
    procs: list[Any] = field(default_factory=list)
    pipes: list[Pipe] = field(default_factory=list)

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        share = -(-self.count // self.processes)
        for start in range(self.first, self.first + self.count, share):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_devices_entry, name=f"devices-{start}",
                               args=(self.port, start, min(share, self.first + self.count - start), theirs))
            proc.start()
            self.procs.append(proc)
            self.pipes.append(mine)

    def connected(self, timeout: float = 900) -> dict[str, float]:
        """Wait until every process has opened its connections: their sums, slowest seconds."""
        reports = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError("a device process did not report its connections")
            reports.append(pipe.recv())
        summed = {k: float(sum(r[k] for r in reports)) for k in reports[0] if k != "seconds"}
        return {**summed, "seconds": max(r["seconds"] for r in reports)}

    def stop(self) -> dict[str, int]:
        for pipe in self.pipes:
            pipe.send("stop")
        reports = [pipe.recv() for pipe in self.pipes if pipe.poll(60)]
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        return {k: sum(r[k] for r in reports) for k in reports[0]} if reports else {}


# --- the fleet --------------------------------------------------------------------------------

@dataclass
class FleetProcess:
    workdir: Path
    database_url: str
    broker_url: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "FLEET_DATABASE_URL": self.database_url,
                "FLEET_MQTT_URL": self.broker_url, "FLEET_MQTT_CLIENT_ID": "fleet-devices-10k",
                "FLEET_BROKER_ACCOUNTS": "none", "FLEET_SNAPSHOT_DIR": str(self.workdir / "snapshots"),
                "FLEET_OTA_DIR": str(self.workdir / "ota")}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "fleet.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "--log-level", "WARNING", "serve",
                                      "--port", str(self.port)], cwd=self.workdir, env=self.env(), stdout=log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleet serve exited {self.proc.returncode}: "
                                   f"{(self.workdir / 'fleet.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise TimeoutError("fleet serve not healthy within 180 s")
        subprocess.run([sys.executable, "-m", "fleet.cli", "user-add", "bench", "--role", "admin",
                        "--password-stdin"], input=PASSWORD.encode(), env=self.env(), cwd=self.workdir, check=True,
                       capture_output=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def register(database_url: str, first: int, count: int) -> None:
    """Devices registered in bulk, as the registry has them before they are installed."""
    from tortoise import Tortoise

    from fleet.db import MODELS
    from fleet.models import Device, DeviceStatus

    await Tortoise.init(db_url=database_url, modules={"models": MODELS})
    try:
        rng = random.Random(first)
        rows = [Device(id=device_id(n), kind="esp32", name=f"street light {n}", ward=WARDS[n % len(WARDS)],
                       latitude=11.53 + rng.uniform(-0.06, 0.06), longitude=106.89 + rng.uniform(-0.06, 0.06),
                       status=DeviceStatus.REGISTERED, roles=["light"]) for n in range(first, first + count)]
        for start in range(0, len(rows), 1000):
            await Device.bulk_create(rows[start:start + 1000])
    finally:
        await Tortoise.close_connections()


async def login(http: httpx.AsyncClient) -> None:
    """A bearer token for the API and a session cookie for the pages."""
    token = (await http.post("/api/auth/login", json={"username": "bench", "password": PASSWORD})).json()["token"]
    http.headers["Authorization"] = f"Bearer {token}"
    link = (await http.post("/api/auth/login-link")).json()["url"]
    redeemed = await http.post("/login/link", data={"code": link.split("code=")[1]},
                               headers={"Origin": str(http.base_url).rstrip("/")})
    if redeemed.status_code != 303:
        raise RuntimeError(f"login link: {redeemed.status_code}")


def targets() -> list[tuple[str, str, dict[str, str]]]:
    return [
        ("GET /healthz (machine baseline)", "/healthz", {}),
        ("GET /api/devices (default page)", "/api/devices", {}),
        ("GET /api/devices?state=online", "/api/devices", {"state": "online"}),
        (f"GET /api/devices?ward={WARDS[2]}", "/api/devices", {"ward": WARDS[2]}),
        ("GET /api/devices?state=offline", "/api/devices", {"state": "offline"}),
        ("overview / (ops page)", "/", {}),
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def time_urls(http: httpx.AsyncClient, requests: int) -> dict[str, tuple[float, float, int]]:
    out = {}
    for label, path, params in targets():
        for _ in range(3):
            first = await http.get(path, params=params)
            first.raise_for_status()
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            response = await http.get(path, params=params)
            times.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
        out[label] = (statistics.median(times), percentile(times, 0.99), len(first.content))
    return out


async def online_count(http: httpx.AsyncClient) -> int:
    answer = await http.get("/api/devices", params={"state": "online", "limit": "1"})
    answer.raise_for_status()
    return int(answer.headers["X-Total-Count"])


async def wait_online(http: httpx.AsyncClient, want: int, timeout: float) -> tuple[float, int]:
    began = time.monotonic()
    seen = 0
    while time.monotonic() - began < timeout:
        seen = await online_count(http)
        if seen >= want:
            return time.monotonic() - began, seen
        await asyncio.sleep(0.5)
    return float("nan"), seen


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


async def measure(backend: str, database_url: str, args: argparse.Namespace, workdir: Path) -> list[str]:
    lines: list[str] = []

    def say(text: str) -> None:
        print(f"[{backend}] {text}", flush=True)
        lines.append(text)

    broker = Mosquitto(workdir / f"mqtt-{backend}")
    broker.start()
    assert broker.proc is not None
    fleet = FleetProcess(workdir, database_url, broker.url)
    small: DeviceProcesses | None = None
    large: DeviceProcesses | None = None
    try:
        fleet.start()
        assert fleet.proc is not None
        await register(database_url, 0, args.baseline)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fleet.port}", timeout=120) as http:
            await login(http)
            await time_urls(http, 3)  # warm every route before the idle figure
            await asyncio.sleep(2)
            fleet_idle, broker_idle = rss_kib(fleet.proc.pid), rss_kib(broker.proc.pid)
            say(f"idle, {args.baseline} registered, none connected: fleet RSS {mib(fleet_idle)}, "
                f"Mosquitto RSS {mib(broker_idle)}; {load_average()}")

            small = DeviceProcesses(broker.port, 0, args.baseline, 1)
            small.start()
            opened = small.connected()
            took, seen = await wait_online(http, args.baseline, 300)
            say(f"{int(opened['connected'])} connected in {opened['seconds']:.1f} s, all online in the fleet "
                f"{took:.1f} s after ({seen} online); fleet RSS {mib(rss_kib(fleet.proc.pid))}; {load_average()}")
            at_small = await time_urls(http, args.requests)
            say(f"API timed at {args.baseline} devices; {load_average()}")

            rest = args.devices - args.baseline
            began = time.perf_counter()
            await register(database_url, args.baseline, rest)
            say(f"{rest:,} more registered in bulk in {time.perf_counter() - began:.1f} s")
            large = DeviceProcesses(broker.port, args.baseline, rest, args.processes)
            began_all = time.monotonic()
            large.start()
            opened = large.connected()
            took, seen = await wait_online(http, args.devices, 900)
            total_s = time.monotonic() - began_all
            say(f"{int(opened['connected']):,} more connected (failed {int(opened['failed'])}, connect retries "
                f"{int(opened['retries'])}) in {opened['seconds']:.1f} s; all {args.devices:,} online in the fleet "
                f"{total_s:.1f} s after the processes started ({seen:,} online); fleet RSS "
                f"{mib(rss_kib(fleet.proc.pid))}, Mosquitto RSS {mib(rss_kib(broker.proc.pid))}; {load_average()}")
            await asyncio.sleep(args.settle)  # one health period from every device
            fleet_full, broker_full = rss_kib(fleet.proc.pid), rss_kib(broker.proc.pid)
            still = await online_count(http)
            say(f"after {args.settle:.0f} s more (a health from each): {still:,} online; fleet RSS {mib(fleet_full)} "
                f"= {(fleet_full - fleet_idle) / args.devices:.2f} KiB per device over idle; Mosquitto RSS "
                f"{mib(broker_full)} = {(broker_full - broker_idle) / args.devices:.2f} KiB per connection; "
                f"{load_average()}")
            spy = None
            if args.py_spy:
                spy = subprocess.Popen(  # noqa: ASYNC220  # started and left running: nothing to wait for
                    [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(fleet.proc.pid),
                     "--format", "raw", "--rate", "200", "-o", str(args.py_spy), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                await asyncio.sleep(1)
            at_large = await time_urls(http, args.requests)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            say(f"API timed at {args.devices:,} devices; fleet RSS {mib(rss_kib(fleet.proc.pid))}; {load_average()}")
            still = await online_count(http)
            say(f"{still:,} online at the end of the timing")
        sent = large.stop()
        large = None
        small_sent = small.stop()
        small = None
        say(f"device processes: {sent.get('alive_at_stop', 0) + small_sent.get('alive_at_stop', 0):,} connections "
            f"alive at stop, {sent.get('lost', 0) + small_sent.get('lost', 0)} lost; health sent "
            f"{sent.get('health', 0) + small_sent.get('health', 0):,}, PUBACKs {sent.get('acked', 0):,}, "
            f"PINGREQs {sent.get('pings', 0) + small_sent.get('pings', 0):,}")
        lines.append("")
        lines.append(f"{'':42} {args.baseline:>5} devices p50 / p99   {args.devices:>6,} devices p50 / p99   "
                     "ratio p50  p99   (bytes at 10k)")
        for label, (p50, p99, _size) in at_small.items():
            q50, q99, size = at_large[label]
            lines.append(f"{label:<42} {p50:8.1f} / {p99:7.1f} ms      {q50:8.1f} / {q99:7.1f} ms        "
                         f"{q50 / p50:5.2f} {q99 / p99:5.2f}   ({size:,})")
        return lines
    finally:
        for group in (large, small):
            if group is not None:
                for proc in group.procs:
                    proc.kill()
        fleet.stop()
        broker.stop()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4, help="device processes for the large step")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per URL (>= 50 for a p99)")
    parser.add_argument("--settle", type=float, default=35.0, help="seconds at full size before the figures")
    parser.add_argument("--sqlite", action="store_true", help="also on SQLite")
    parser.add_argument("--py-spy", type=Path, help="profile the fleet during the timing at full size (raw stacks)")
    args = parser.parse_args()
    limit = raise_fd_limit()
    print(f"command: .venv/bin/python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}", flush=True)
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()  # noqa: ASYNC240  # before any task
    print(f"file-descriptor limit {limit} (this process, Mosquitto, the device processes); local ports "
          f"{'-'.join(ports)}; {load_average()}", flush=True)
    if limit < args.devices + 100:
        print(f"devices_10k: the hard file-descriptor limit {limit} is below {args.devices} connections",
              file=sys.stderr)
        return 1
    results: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-10k-") as tmp:
        async with fresh_database() as url:
            results["postgres"] = await measure("postgres", url, args, Path(tmp) / "pg")
        if args.sqlite:
            (Path(tmp) / "lite").mkdir()
            results["sqlite"] = await measure("sqlite", f"sqlite://{tmp}/lite/fleet.sqlite3", args,
                                              Path(tmp) / "lite")
    for backend, lines in results.items():
        print(f"\n== {backend}")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
