"""A load generator for the fleet's ingest that is not the bottleneck (issue 15, must-have 3).

Devices speak the wire contract (docs/protocol.md) over MQTT 3.1.1 at QoS 1, each in its own
stream: a retained birth (`ses`, `next_seq` 0, and `prev` when the run says how far an earlier
stream went), then numbered messages `seq` 0, 1, 2, … of a mix of telemetry, health and events,
then a retained death (`shutdown`), or, with `--deaths will`, a connection dropped without
DISCONNECT so the broker publishes the device's will (`lost`). Every numbered message has its
place in its device's stream, so a receiver can count loss as gaps.

The MQTT client is a small one written here on raw asyncio sockets: it writes PUBLISH packets in
bulk with up to `--window` unacknowledged per connection and counts PUBACKs as they come. On this
machine it out-publishes paho (one process with a large in-flight window) and `mosquitto_pub -l`
(one C process per topic); `--compare` measures the three against each other in the same run.

Two connection modes:
- multiplexed (default): `--processes` processes, each with `--connections` connections, each
  connection carrying many devices' streams (a device's messages always on one connection, so
  their order holds): throughput.
- `--per-device`: every device its own connection (client id = device id, clean session false,
  a 30 s keepalive with PINGREQs, its will set, subscribed to its `cmd` and `state/desired`), the
  devices spread over the processes: the count of connected devices. `--hold S` keeps them
  connected S seconds after publishing.

Pacing: `--rate R` (messages/s in all, spread evenly over the connections) or 0, as fast as the
broker takes them. Each process connects first and waits until all have; then all start at once.

Proof that it is not the bottleneck (`--check`): a private Mosquitto, the generator's own publish
rate alone, then again while `mosquitto_sub -q 1 -C N` (C, persistent session) drains the same load:
the generator's rate is printed beside the subscriber's.

    .venv/bin/python benchmarks/loadgen.py --check [--messages 100000] [--devices 1000]
    .venv/bin/python benchmarks/loadgen.py --compare [--messages 100000]
    .venv/bin/python benchmarks/loadgen.py --port 1883 [--devices 1000 --messages 100000
        --mix telemetry=80,health=15,event=5 --rate 0 --processes 2 --connections 4 --per-device
        --hold 0 --deaths shutdown|will|none --ses N --prefix lg --seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet.ingest import mqtt_wire as wire

ROOT = Path(__file__).resolve().parents[1]
TS_BASE = 1_795_766_400_000
KINDS = ("telemetry", "health", "event")
DEFAULT_MIX = {"telemetry": 80, "health": 15, "event": 5}
CONNECT_CONCURRENCY = 200  # connections opened at once per process (the broker's listen backlog)


split_packets = wire.packets  # the fleet's own framing (fleet/ingest/mqtt_wire.py)


# --- what is sent -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadSpec:
    """One run of the generator. Every process derives its share of the work from this alone."""

    port: int
    host: str = "127.0.0.1"
    devices: int = 100
    messages: int = 10_000  # numbered messages in all; births and deaths come on top
    mix: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MIX))
    rate: float = 0.0  # messages/s in all; 0: as fast as the broker takes them
    processes: int = 2
    connections: int = 4  # per process (multiplexed mode)
    per_device: bool = False
    ses: int = 1_795_000_000  # the stream number of every device in this run
    prev_next_seq: int | None = None  # births say prev = (ses - 1, this); None: no prev
    prefix: str = "lg"
    births: bool = True
    deaths: str = "shutdown"  # shutdown | will | none
    keepalive: int = 30
    hold_s: float = 0.0
    window: int = 2000  # unacknowledged publishes per connection
    seed: int = 1

    def device_ids(self) -> list[str]:
        return [f"{self.prefix}-{i:05d}" for i in range(self.devices)]


@dataclass(frozen=True)
class DevicePlan:
    device_id: str
    ses: int
    kinds: list[str]  # the kind of each numbered message, seq 0, 1, …

    def counts(self) -> dict[str, int]:
        return {k: self.kinds.count(k) for k in KINDS}


def plan(spec: LoadSpec) -> list[DevicePlan]:
    """What each device sends: the same on every process and in the benchmark that checks it."""
    weights = [spec.mix.get(k, 0) for k in KINDS]
    if sum(weights) <= 0:
        raise ValueError("the mix has no message kind")
    plans = []
    for i, device_id in enumerate(spec.device_ids()):
        n = spec.messages // spec.devices + (1 if i < spec.messages % spec.devices else 0)
        rng = random.Random(spec.seed * 1_000_003 + i)
        plans.append(DevicePlan(device_id, spec.ses, rng.choices(KINDS, weights, k=n)))
    return plans


def birth_payload(spec: LoadSpec, ses: int) -> bytes:
    body: dict[str, Any] = {"v": 1, "ses": ses, "ts": int(time.time() * 1000), "kind": "pi", "fw": "0.1.0",
                            "roles": ["sim"], "boot": {"n": 1, "reason": "start"}, "period_s": 30, "next_seq": 0}
    if spec.prev_next_seq is not None:
        body["prev"] = {"ses": ses - 1, "next_seq": spec.prev_next_seq}
    return json.dumps(body, separators=(",", ":")).encode()


def death_payload(ses: int, reason: str) -> bytes:
    return b'{"v":1,"ses":%d,"ts":null,"reason":"%s"}' % (ses, reason.encode())


def numbered_payload(kind: str, ses: int, seq: int, ts: int) -> bytes:
    if kind == "telemetry":
        return (b'{"v":1,"ses":%d,"seq":%d,"ts":%d,"role":"sim","r":{"temp_c":%d.%d,"humidity_pct":%d.5,'
                b'"pm25":%d.0}}' % (ses, seq, ts, 25 + seq % 10, seq % 10, 60 + seq % 30, 10 + seq % 7))
    if kind == "health":
        return (b'{"v":1,"ses":%d,"seq":%d,"ts":%d,"up_s":%d,"fw":"0.1.0","cpu_pct":12.5,"mem_pct":41.0,'
                b'"disk_pct":63.2,"temp_c":48.3,"queue":0,"dropped":0,"reconnects":0}' % (ses, seq, ts, 60 + seq))
    return (b'{"v":1,"ses":%d,"seq":%d,"ts":%d,"id":"mot-%d-%d","type":"motion","phase":"once",'
            b'"category":"traffic_safety","data":{"boxes":[[120,80,64,48]],"area_pct":1.9},'
            b'"snapshot":{"ref":"snap/mot-%d-%d.jpg","sha256":"9f2c1b7e0d4a5c6b8e3f1a2d4c6e8f0a1b3c5d7e9f1a2b3c4d5e6f7'
            b'08192a3b4","bytes":48213,"type":"image/jpeg"}}' % (ses, seq, ts, ses, seq, ses, seq))


def device_messages(spec: LoadSpec, device: DevicePlan) -> Iterator[tuple[bytes, bytes, bool]]:
    """(topic, payload, retain) of one device, in stamp order. A `will` death is not here: the
    broker sends it when the connection drops."""
    base = f"ioc/v1/d/{device.device_id}/".encode()
    if spec.births:
        yield base + b"birth", birth_payload(spec, device.ses), True
    for seq, kind in enumerate(device.kinds):
        yield base + kind.encode(), numbered_payload(kind, device.ses, seq, TS_BASE + seq * 1000), False
    if spec.deaths == "shutdown":
        yield base + b"death", death_payload(device.ses, "shutdown"), True


def interleaved(spec: LoadSpec, devices: list[DevicePlan]) -> Iterator[tuple[bytes, bytes, bool]]:
    """Several devices' messages round robin, each device's in its own order."""
    streams = [device_messages(spec, d) for d in devices]
    while streams:
        alive = []
        for stream in streams:
            item = next(stream, None)
            if item is not None:
                yield item
                alive.append(stream)
        streams = alive


def expected_total(spec: LoadSpec) -> int:
    """Messages a subscriber to ioc/v1/d/+/# receives from one run (wills included)."""
    return spec.messages + (spec.devices if spec.births else 0) + (spec.devices if spec.deaths != "none" else 0)


# --- MQTT 3.1.1 on raw sockets ----------------------------------------------------------------

def connect_packet(client_id: str, *, keepalive: int, clean: bool,
                   will: tuple[bytes, bytes] | None = None) -> bytes:
    return wire.connect(client_id, level=4, keepalive=keepalive, clean=clean, will=will)


def publish_packet(topic: bytes, payload: bytes, packet_id: int, retain: bool) -> bytes:
    return wire.publish(topic, payload, packet_id=packet_id, retain=retain, level=4)


def subscribe_packet(packet_id: int, topics: list[bytes]) -> bytes:
    return wire.subscribe(packet_id, [(t, 1) for t in topics], level=4)


class ProtocolError(RuntimeError):
    pass


class Connection:
    """One MQTT connection that publishes at QoS 1 with a window of unacknowledged messages."""

    def __init__(self, spec: LoadSpec, client_id: str, *, will: tuple[bytes, bytes] | None = None,
                 clean: bool = True) -> None:
        self.spec = spec
        self.client_id = client_id
        self.will = will
        self.clean = clean
        self.sent = 0
        self.acked = 0
        self.last_ack = 0.0
        self._next_id = 0
        self._acks_changed = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._connack = asyncio.get_running_loop().create_future()
        self._suback = asyncio.Event()

    async def open(self, subscribe: list[bytes] | None = None) -> None:
        for attempt in range(20):
            try:
                self._reader, self._writer = await asyncio.open_connection(self.spec.host, self.spec.port)
                break
            except OSError:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        assert self._writer is not None
        writer = self._writer
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._read_task = asyncio.create_task(self._read_loop(), name=f"read-{self.client_id}")
        writer.write(connect_packet(self.client_id, keepalive=self.spec.keepalive, clean=self.clean, will=self.will))
        code = await asyncio.wait_for(self._connack, 30)
        if code != 0:
            raise ProtocolError(f"{self.client_id}: CONNACK return code {code}")
        if subscribe:
            writer.write(subscribe_packet(self._packet_id(), subscribe))
            await asyncio.wait_for(self._suback.wait(), 30)
        self._ping_task = asyncio.create_task(self._ping_loop(), name=f"ping-{self.client_id}")

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def _ping_loop(self) -> None:
        assert self._writer is not None
        while True:
            await asyncio.sleep(self.spec.keepalive / 2)
            self._writer.write(b"\xc0\x00")

    async def _read_loop(self) -> None:
        assert self._reader is not None and self._writer is not None
        buf = b""
        while True:
            chunk = await self._reader.read(65536)
            if not chunk:
                if not self._connack.done():
                    self._connack.set_exception(ProtocolError(f"{self.client_id}: closed before CONNACK"))
                return
            buf += chunk
            acks = 0
            packets, pos = split_packets(buf)
            for kind, body in packets:
                packet = kind >> 4
                if packet == 4:  # PUBACK
                    acks += 1
                elif packet == 2:  # CONNACK
                    if not self._connack.done():
                        self._connack.set_result(body[1])
                elif packet == 9:  # SUBACK
                    self._suback.set()
                elif packet == 3:  # PUBLISH to the device (a command, desired state): acknowledge QoS 1
                    qos = (kind >> 1) & 3
                    if qos:
                        topic_len = int.from_bytes(body[:2], "big")
                        ident = body[2 + topic_len:4 + topic_len]
                        self._writer.write((b"\x40\x02" if qos == 1 else b"\x50\x02") + ident)
            buf = buf[pos:]
            if acks:
                self.acked += acks
                self.last_ack = time.time()
                self._acks_changed.set()

    async def publish_all(self, messages: Iterator[tuple[bytes, bytes, bool]], rate: float) -> None:
        """Send everything, at most `window` unacknowledged; paced to `rate` msg/s when > 0."""
        assert self._writer is not None
        writer, window = self._writer, self.spec.window
        start = time.monotonic()
        exhausted = False
        while not exhausted:
            room = window - (self.sent - self.acked)
            if rate > 0:
                due = int((time.monotonic() - start) * rate) + 1 - self.sent
                room = min(room, due)
            if room <= 0:
                if rate > 0 and self.sent - self.acked < window:
                    await asyncio.sleep(0.005)
                else:
                    self._acks_changed.clear()
                    await self._acks_changed.wait()
                continue
            out = bytearray()
            for _ in range(min(room, 500)):
                item = next(messages, None)
                if item is None:
                    exhausted = True
                    break
                out += publish_packet(item[0], item[1], self._packet_id(), item[2])
                self.sent += 1
            writer.write(out)
            await writer.drain()
        while self.acked < self.sent:
            self._acks_changed.clear()
            await self._acks_changed.wait()

    async def close(self, *, clean: bool = True) -> None:
        """DISCONNECT (the will is discarded), or, `clean=False`, drop the socket (the broker sends it)."""
        for task in (self._ping_task, self._read_task):
            if task is not None:
                task.cancel()
        if self._writer is None:
            return
        if clean:
            self._writer.write(b"\xe0\x00")
            try:
                await self._writer.drain()
            except ConnectionError:
                pass
        else:
            sock = self._writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self._writer.close()


# --- one process ------------------------------------------------------------------------------

@dataclass
class ProcessResult:
    index: int
    connections: int
    sent: int
    acked: int
    first_send: float  # time.time()
    last_ack: float
    connect_s: float


async def _process_main(spec: LoadSpec, index: int, ready: Any, go: Any) -> ProcessResult:
    mine = plan(spec)[index::spec.processes]
    began = time.monotonic()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    if spec.per_device:
        conns = []
        for device in mine:
            will = (f"ioc/v1/d/{device.device_id}/death".encode(), death_payload(device.ses, "lost"))
            conns.append(Connection(spec, device.device_id, will=will if spec.deaths == "will" else None,
                                    clean=False))
        jobs = [(conn, [device]) for conn, device in zip(conns, mine, strict=True)]

        async def open_one(conn: Connection, device: DevicePlan) -> None:
            async with gate:
                base = f"ioc/v1/d/{device.device_id}/".encode()
                await conn.open([base + b"cmd", base + b"state/desired"])
        await asyncio.gather(*(open_one(c, d[0]) for c, d in jobs))
    else:
        count = max(1, min(spec.connections, len(mine)))
        conns = [Connection(spec, f"{spec.prefix}-load-{spec.ses}-{index}-{c}") for c in range(count)]
        jobs = [(conn, mine[c::count]) for c, conn in enumerate(conns)]
        await asyncio.gather(*(c.open() for c in conns))
    connect_s = time.monotonic() - began
    ready.put(index)
    await asyncio.to_thread(go.wait)
    first_send = time.time()
    per_conn_rate = spec.rate / (spec.processes * len(conns)) if spec.rate > 0 else 0.0
    await asyncio.gather(*(conn.publish_all(interleaved(spec, devices), per_conn_rate) for conn, devices in jobs))
    last_ack = max(c.last_ack for c in conns) if conns else first_send
    if spec.hold_s > 0:
        await asyncio.sleep(spec.hold_s)
    await asyncio.gather(*(c.close(clean=spec.deaths != "will") for c in conns))
    return ProcessResult(index, len(conns), sum(c.sent for c in conns), sum(c.acked for c in conns),
                         first_send, last_ack, connect_s)


def _process_entry(spec: LoadSpec, index: int, ready: Any, go: Any, results: Any) -> None:
    if spec.per_device:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        results.put(asdict(asyncio.run(_process_main(spec, index, ready, go))))
    except BaseException as err:
        results.put({"index": index, "error": f"{type(err).__name__}: {err}"})
        raise


# --- a run ------------------------------------------------------------------------------------

@dataclass
class LoadResult:
    spec: LoadSpec
    published: int  # PUBLISH packets acknowledged by the broker
    first_send: float
    last_ack: float
    processes: list[ProcessResult]

    @property
    def seconds(self) -> float:
        return max(self.last_ack - self.first_send, 1e-9)

    @property
    def rate(self) -> float:
        return self.published / self.seconds

    def line(self) -> str:
        s = self.spec
        mode = "one connection per device" if s.per_device else \
            f"{s.processes} processes x {s.connections} connections"
        return (f"loadgen: {self.published:,} messages acked in {self.seconds:.2f} s = {self.rate:,.0f} msg/s "
                f"({s.devices} devices, {mode}, window {s.window}, "
                f"{'paced ' + format(s.rate, ',.0f') + ' msg/s' if s.rate else 'as fast as the broker takes them'})")


class Load:
    """The generator's processes: `start()` connects them all, `go()` releases them at once,
    `wait()` collects their results."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        ctx = multiprocessing.get_context("spawn")
        self._ready = ctx.Queue()
        self._results = ctx.Queue()
        self._go = ctx.Event()
        self._procs = [ctx.Process(target=_process_entry, args=(spec, i, self._ready, self._go, self._results),
                                   name=f"loadgen-{i}", daemon=True) for i in range(spec.processes)]

    def start(self, timeout: float = 300.0) -> None:
        for proc in self._procs:
            proc.start()
        deadline = time.monotonic() + timeout
        for _ in self._procs:
            while True:
                try:
                    self._ready.get(timeout=1.0)
                    break
                except Exception:  # queue.Empty
                    if any(p.exitcode not in (None, 0) for p in self._procs):
                        raise RuntimeError(f"loadgen: a process failed: {self._results.get(timeout=5)}") from None
                    if time.monotonic() > deadline:
                        raise TimeoutError("loadgen: processes did not connect in time") from None

    def go(self) -> None:
        self._go.set()

    def wait(self, timeout: float = 3600.0) -> LoadResult:
        out = []
        for _ in self._procs:
            item = self._results.get(timeout=timeout)
            if "error" in item:
                raise RuntimeError(f"loadgen process {item['index']}: {item['error']}")
            out.append(ProcessResult(**item))
        for proc in self._procs:
            proc.join(30)
        return LoadResult(self.spec, sum(r.acked for r in out), min(r.first_send for r in out),
                          max(r.last_ack for r in out), sorted(out, key=lambda r: r.index))

    def terminate(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()


def run(spec: LoadSpec) -> LoadResult:
    load = Load(spec)
    try:
        load.start()
        load.go()
        return load.wait()
    finally:
        load.terminate()


# --- the bare subscriber (C) ------------------------------------------------------------------

class BareSubscriber:
    """`mosquitto_sub -q 1` with a persistent session (`-c -i`), counting with `-C N`; each message's
    arrival stamped by `-F %U`, so its rate is first to last message, timed by the C client."""

    def __init__(self, port: int, client_id: str, workdir: Path, topic: str = "ioc/v1/d/+/#") -> None:
        self.port, self.client_id, self.topic = port, client_id, topic
        self.out = workdir / f"{client_id}.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.count = 0

    def _args(self) -> list[str]:
        return ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1", "-c", "-i", self.client_id,
                "-t", self.topic]

    def make_session(self) -> None:
        """Subscribe and leave at once (-E): the broker now keeps the messages for this session."""
        subprocess.run([*self._args(), "-E"], check=True, timeout=30)

    def start(self, count: int) -> None:
        self.count = count
        self.started = time.time()
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen([*self._args(), "-C", str(count), "-F", "%U"], stdout=out)

    def wait(self, timeout: float = 600.0) -> tuple[int, float, float]:
        """(messages, first arrival, last arrival), times as time.time()."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        lines = self.out.read_bytes().split()
        if not lines:
            return 0, 0.0, 0.0
        return len(lines), float(lines[0]), float(lines[-1])


# --- other publishers, for --compare ----------------------------------------------------------

def _paho_process(spec: LoadSpec, index: int, ready: Any, go: Any, results: Any) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-load-{index}")
    client.max_inflight_messages_set(spec.window)
    client.max_queued_messages_set(0)
    client.connect(spec.host, spec.port)
    client.loop_start()
    mine = plan(spec)[index::spec.processes]
    ready.put(index)
    go.wait()
    first = time.time()
    info = None
    n = 0
    for topic, payload, retain in interleaved(spec, mine):
        info = client.publish(topic.decode(), payload, qos=1, retain=retain)
        n += 1
    if info is not None:
        info.wait_for_publish(600)
    last = time.time()
    client.loop_stop()
    client.disconnect()
    results.put({"n": n, "first": first, "last": last})


def _run_paho(spec: LoadSpec) -> tuple[int, float]:
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_paho_process, args=(spec, i, ready, go, results), daemon=True)
             for i in range(spec.processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    go.set()
    out = [results.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(30)
    n = sum(o["n"] for o in out)
    return n, n / (max(o["last"] for o in out) - min(o["first"] for o in out))


def _run_mosquitto_pub(spec: LoadSpec, workdir: Path) -> tuple[int, float]:
    """One `mosquitto_pub -l -q 1` per device and topic kind, fed its lines from a file."""
    files = []
    for device in plan(spec):
        by_kind: dict[str, list[bytes]] = {}
        for seq, kind in enumerate(device.kinds):
            by_kind.setdefault(kind, []).append(numbered_payload(kind, device.ses, seq, TS_BASE + seq))
        for kind, lines in by_kind.items():
            path = workdir / f"{device.device_id}.{kind}.lines"
            path.write_bytes(b"\n".join(lines) + b"\n")
            files.append((f"ioc/v1/d/{device.device_id}/{kind}", path, len(lines)))
    start = time.time()
    procs = []
    for topic, path, _ in files:
        with path.open("rb") as stdin:
            procs.append(subprocess.Popen(["mosquitto_pub", "-h", spec.host, "-p", str(spec.port), "-q", "1",
                                           "-t", topic, "-l"], stdin=stdin))
    for p in procs:
        p.wait(900)
    n = sum(f[2] for f in files)
    return n, n / (time.time() - start)


# --- --check and --compare --------------------------------------------------------------------

def _private_broker(workdir: Path) -> Any:
    sys.path.insert(0, str(ROOT))
    from tests.support.mosquitto import Mosquitto
    # the broker keeps everything for the subscriber's session (no max_queued_messages drop)
    broker = Mosquitto(workdir, extra_conf="max_queued_messages 0\nmax_inflight_messages 1000\n")
    broker.start()
    return broker


def load_average() -> str:
    return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def check(args: argparse.Namespace, base: LoadSpec) -> int:
    """The generator alone, then with `mosquitto_sub` draining the same load, each round on a fresh broker."""
    alone, loaded, drained = [], [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="loadgen-check-") as tmp:
            broker = _private_broker(Path(tmp))
            try:
                spec = LoadSpec(**{**asdict(base), "port": broker.port, "ses": base.ses + 2 * r})
                alone.append(run(spec).rate)
                spec = LoadSpec(**{**asdict(spec), "ses": spec.ses + 1, "prefix": spec.prefix + "s"})
                sub = BareSubscriber(broker.port, f"bare-sub-{r}", Path(tmp))
                sub.make_session()
                total = expected_total(spec)
                sub.start(total)
                result = run(spec)
                got, first, last = sub.wait()
                loaded.append(result.rate)
                drained.append((got - 1) / max(last - first, 1e-9))
                print(f"round {r + 1}: generator alone {alone[-1]:,.0f} msg/s; with mosquitto_sub draining: "
                      f"generator {result.rate:,.0f} msg/s, mosquitto_sub {drained[-1]:,.0f} msg/s "
                      f"({got:,}/{total:,} received); {load_average()}", flush=True)
                if got != total:
                    print(f"loadgen: mosquitto_sub received {got} of {total}", file=sys.stderr)
                    return 1
            finally:
                broker.kill()
    mode = "one connection per device" if base.per_device else f"{base.connections} connections each"
    print(f"\n{base.messages:,} numbered messages + births/deaths from {base.devices} devices, QoS 1, "
          f"{base.processes} processes, {mode}, median of {args.rounds}:")
    print(f"  generator alone:                      {statistics.median(alone):,.0f} msg/s")
    print(f"  generator while mosquitto_sub drains: {statistics.median(loaded):,.0f} msg/s")
    print(f"  mosquitto_sub -q 1 draining the same: {statistics.median(drained):,.0f} msg/s")
    print(f"  ({load_average()})")
    return 0


def compare(args: argparse.Namespace, base: LoadSpec) -> int:
    """The three publishers on the same telemetry load, each on a fresh broker, no subscriber."""
    figures: dict[str, list[float]] = {"raw asyncio (this)": [], "paho": [], "mosquitto_pub -l": []}
    for r in range(args.rounds):
        for name in figures:
            with tempfile.TemporaryDirectory(prefix="loadgen-compare-") as tmp:
                broker = _private_broker(Path(tmp) / "mqtt")
                try:
                    spec = LoadSpec(**{**asdict(base), "port": broker.port, "births": False, "deaths": "none"})
                    if name == "paho":
                        n, rate = _run_paho(spec)
                    elif name == "mosquitto_pub -l":
                        n, rate = _run_mosquitto_pub(spec, Path(tmp))
                    else:
                        result = run(spec)
                        n, rate = result.published, result.rate
                finally:
                    broker.kill()
            figures[name].append(rate)
            print(f"round {r + 1}: {name}: {n:,} messages, {rate:,.0f} msg/s; {load_average()}", flush=True)
    print(f"\n{base.messages:,} messages from {base.devices} devices, QoS 1, median of {args.rounds}:")
    for name, rates in figures.items():
        print(f"  {name:20s} {statistics.median(rates):,.0f} msg/s")
    return 0


def parse_mix(text: str) -> dict[str, int]:
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown message kind {kind!r} (one of {', '.join(KINDS)})")
        mix[kind] = int(weight or 1)
    return mix


def arguments(parser: argparse.ArgumentParser) -> None:
    """The generator's options (ingest_durable.py takes them too)."""
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100_000, help="numbered messages in all")
    parser.add_argument("--mix", type=parse_mix, default=dict(DEFAULT_MIX),
                        help="kind=weight,… of telemetry, health, event (default telemetry=80,health=15,event=5)")
    parser.add_argument("--rate", type=float, default=0.0, help="msg/s in all; 0: as fast as the broker takes")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4, help="per process (multiplexed mode)")
    parser.add_argument("--per-device", action="store_true", help="one connection per device")
    parser.add_argument("--window", type=int, default=2000, help="unacknowledged publishes per connection")
    parser.add_argument("--deaths", choices=["shutdown", "will", "none"], default="shutdown")
    parser.add_argument("--no-births", action="store_true")
    parser.add_argument("--keepalive", type=int, default=30)
    parser.add_argument("--hold", type=float, default=0.0, help="seconds to stay connected after publishing")
    parser.add_argument("--ses", type=int, default=1_795_000_000)
    parser.add_argument("--prefix", default="lg")
    parser.add_argument("--seed", type=int, default=1)


def spec_from(args: argparse.Namespace, port: int) -> LoadSpec:
    if args.deaths == "will" and not args.per_device:
        raise SystemExit("loadgen: --deaths will needs --per-device (a will belongs to one connection)")
    return LoadSpec(port=port, devices=args.devices, messages=args.messages, mix=args.mix, rate=args.rate,
                    processes=args.processes, connections=args.connections, per_device=args.per_device,
                    ses=args.ses, prefix=args.prefix, births=not args.no_births, deaths=args.deaths,
                    keepalive=args.keepalive, hold_s=args.hold, window=args.window, seed=args.seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, help="the broker on 127.0.0.1 to load")
    parser.add_argument("--check", action="store_true", help="prove it: alone vs mosquitto_sub draining")
    parser.add_argument("--compare", action="store_true", help="raw asyncio vs paho vs mosquitto_pub -l")
    parser.add_argument("--rounds", type=int, default=3)
    arguments(parser)
    args = parser.parse_args()
    if shutil.which("mosquitto_sub") is None and (args.check or args.compare):
        raise SystemExit("loadgen: mosquitto_sub/mosquitto_pub not found (apt install mosquitto-clients)")
    if args.check:
        return check(args, spec_from(args, 0))
    if args.compare:
        return compare(args, spec_from(args, 0))
    if args.port is None:
        raise SystemExit("loadgen: give --port, --check or --compare")
    result = run(spec_from(args, args.port))
    print(result.line())
    for p in result.processes:
        print(f"  process {p.index}: {p.acked:,} acked on {p.connections} connections "
              f"({p.acked / max(p.last_ack - p.first_send, 1e-9):,.0f} msg/s; connected in {p.connect_s:.1f} s)")
    print(f"  ({load_average()})")
    return 0 if result.published == result.spec.messages + (result.spec.devices if result.spec.births else 0) + (
        result.spec.devices if result.spec.deaths == "shutdown" else 0) else 1


if __name__ == "__main__":
    sys.exit(main())
