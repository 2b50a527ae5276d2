"""Broker-node kill with counts (issue 15, "Benchmarks"): devices publishing at QoS 1 into a 3-node
NATS cluster lose a node; is anything the broker acknowledged missing from the fleet's database?

Each run is private and fresh: a 3-node NATS 2.9 cluster with JetStream and its MQTT gateway
(tests/support/nats_cluster.py, `stream_replicas: 3`), a fresh PostgreSQL database
(tests/support/postgres.py) or, with `--db sqlite`, a SQLite file, and one `fleet serve`
subprocess with FLEET_BROKER_ACCOUNTS=nats, FLEET_MQTT_PROTOCOL=3.1.1, its FLEET_MQTT_URL on node 3
and FLEET_MQTT_OTHER_HOSTS nodes 1 and 2 (so the fleet sits on the node that is killed and moves).

Devices: `--devices` are enrolled through the fleet's API (POST /api/devices, then
/credentials: each gets its own NATS account, written by the fleet into the nodes' auth file).
Each is then one asyncio MQTT 3.1.1 connection in this process, framed by fleet/ingest/mqtt_wire.py
with payloads from benchmarks/loadgen.py: client id = device id, clean session false, keepalive
5 s (a PINGREQ every 2.5 s; a connection that hears nothing for 7.5 s is taken as lost), its will
a retained death `lost` of the connection's session, no subscriptions (a real device's `cmd`
subscription is one more JetStream consumer per reconnect: not measured here). Device i starts on
node i mod 3 and keeps its own list of the three nodes from there. The device side follows
docs/protocol.md "Streams":
  - the session counter starts at a random 48-bit value (2^47 ... 2^48 - 1); every CONNECT sent
    takes the next number (a CONNECT the node saw is never reused, even if it failed; a refused
    TCP connection takes none), and on CONNACK that number opens a new stream: a retained birth
    (`next_seq` 0, and `prev` = the stream stamped in before and its next seq) is sent first;
  - telemetry is stamped (ses, seq) at `--rate` messages/s per device when it is created, whether
    or not the device is connected (while away it stamps in the last stream it opened), and is
    kept until PUBACKed: at most `--window` (default 100) unacknowledged on the wire, at most
    `--queue` (default 10,000) kept in all; at the bound the oldest is dropped and counted
    (`dropped`; never reached at the defaults);
  - after a lost or failed connection it waits 0.2-1 s and tries the next node of its list, and
    re-sends, oldest first after the new birth, every message not yet PUBACKed (with its first
    packet id and DUP set, as MQTT 3.1.1 asks of a resumed session).

A run: start the fleet (on a cluster just started its QoS 1 SUBSCRIBE is sometimes refused, 0x80,
the node having timed out creating its JetStream consumer, and the fleet's link does not subscribe
again on that connection: a fleet not healthy within 30 s is restarted, up to 3 times, and that is
printed), enrol, connect every device, wait until the fleet's API shows them all online, `--before-s`
of load (default 10), then (kill runs only) SIGKILL node `--node` (default 3, the fleet's own),
`--after-s` more of load (default 20), stop stamping, wait until every device has its messages
PUBACKed (or `--stall-s` passes), wait until the fleet has stored as many telemetry rows as
distinct messages were sent (or no new row for `--stall-s`), then each device sends a retained
death `shutdown` and disconnects. Counted (numbered telemetry only; births and deaths aside):
  - published: messages stamped and sent at least once; acked: PUBACKed by a node;
  - stored: telemetry rows (device_id, ses, seq) in the database, counted there;
  - lost: acked and not stored (the figure that must be 0); sent, not acked, not stored is
    printed apart (`unacked`: a device would still hold it);
  - gaps: the fleet's seq_gap rows (open / all); duplicates: the fleet's seq_stream.duplicates
    and /api/ingest/stats; re-sent: messages the devices sent more than once;
  - longest PUBACK wait: from a message's first send to its PUBACK, the longest of the run;
  - back online (kill runs): from the kill until the fleet's API shows every device that was on
    the killed node online with a session newer than the one it had at the kill, and every other
    device online (polled every 0.25 s);
  - reconnects: connections opened after the first, all devices together, and why connections
    ended or failed (`closed by the node`, `silent`, `closed during CONNECT`, a refused CONNACK,
    ConnectionRefusedError for the dead node's port, ...).
Every round has a baseline run without a kill, then the kill run, each on its own fresh cluster,
database and fleet; `--rounds` > 1 adds medians. On a loss the nodes' warnings and errors are
printed. Exit 1 when anything acked is lost.

    .venv/bin/python benchmarks/broker_node_kill.py [--devices 50] [--rate 5] [--before-s 10]
        [--after-s 20] [--node 3] [--db postgres|sqlite] [--rounds 1] [--stall-s 60] [--window 100]
        [--queue 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import loadgen  # noqa: E402
from benchmarks.ingest_durable import Fleet, Reader, ranges  # noqa: E402
from fleet.ingest import mqtt_wire as wire  # noqa: E402
from tests.support.fleet import enroll  # noqa: E402
from tests.support.nats_cluster import NatsCluster  # noqa: E402
from tests.support.postgres import fresh_database  # noqa: E402

KEEPALIVE_S = 5
CONNECT_TIMEOUT_S = 10.0
BACKOFF_S = (0.2, 1.0)
ADMIN, ADMIN_PASSWORD = "bench", "a node dies at dusk 5821"
POLL_S = 0.25

Key = tuple[int, int]  # (ses, seq)


# --- one device ---------------------------------------------------------------------------------

class ConnectionLost(Exception):
    """The node closed the connection, refused it, or went silent."""


class Device:
    """One device: stamps telemetry at a rate, keeps it until PUBACKed, moves to its next node
    with a new session after a lost connection (module docstring)."""

    def __init__(self, device_id: str, password: str, ports: list[int], *, rate: float, window: int,
                 queue: int) -> None:
        self.device_id, self.password, self.ports = device_id, password, ports
        self.rate, self.window, self.queue_max = rate, window, queue
        self.topic = f"ioc/v1/d/{device_id}/".encode()
        self.counter = 1 << 47 | int.from_bytes(os.urandom(6), "big") >> 1  # docs/protocol.md: no counter yet
        self.stream: int | None = None  # the stream stamped in (None until the first connection)
        self.next_seq = 0
        self.node = 0  # index into ports
        self.connected_node: int | None = None
        self.pending: dict[Key, tuple[bytes, int]] = {}  # stamp order: payload, packet id (0: never sent)
        self.sent: set[Key] = set()
        self.acked: set[Key] = set()
        self.resent = self.dropped = self.connections = self.lost_sessions = 0
        self.drops: Counter[str] = Counter()  # why connections ended or failed
        self.ack_max_s = 0.0  # the longest wait from a message's first send to its PUBACK
        self._first_sent: dict[Key, float] = {}
        self.stamping = True
        self._ids_used: set[int] = set()
        self._next_id = 0
        self._inflight: dict[int, Key] = {}
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._finish = asyncio.Event()

    # the stamping side
    async def stamp(self) -> None:
        await asyncio.sleep(random.uniform(0, 1 / self.rate))
        while self.stamping:
            if self.stream is not None:
                key = (self.stream, self.next_seq)
                self.pending[key] = (loadgen.numbered_payload("telemetry", *key, int(time.time() * 1000)), 0)
                self.next_seq += 1
                if len(self.pending) > self.queue_max:  # the bound: the oldest goes, counted
                    oldest = next(iter(self.pending))
                    self._forget(oldest)
                    self.dropped += 1
                self._wake.set()
            await asyncio.sleep(1 / self.rate)

    def _forget(self, key: Key) -> None:
        _, packet_id = self.pending.pop(key)
        self._first_sent.pop(key, None)
        self._ids_used.discard(packet_id)
        self._inflight.pop(packet_id, None)
        if not self.pending and not self.stamping:
            self._drained.set()

    def _packet_id(self) -> int:
        while True:
            self._next_id = self._next_id % 65_535 + 1
            if self._next_id not in self._ids_used:
                self._ids_used.add(self._next_id)
                return self._next_id

    def stop_stamping(self) -> None:
        self.stamping = False
        if not self.pending:
            self._drained.set()

    async def drained(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # the link side
    async def run(self) -> None:
        while not (self._finish.is_set() and not self.pending):
            try:
                await self._connection()
                return  # finished cleanly
            except (ConnectionLost, OSError, TimeoutError, wire.WireError) as err:
                self.drops[str(err) if isinstance(err, ConnectionLost) else type(err).__name__] += 1
            self.connected_node = None
            self._inflight.clear()
            self.node = (self.node + 1) % len(self.ports)
            await asyncio.sleep(random.uniform(*BACKOFF_S))

    async def _connection(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.ports[self.node]),
                                                CONNECT_TIMEOUT_S)
        try:
            self.counter += 1  # the node sees this CONNECT: its number is never used again
            ses = self.counter
            writer.write(wire.connect(self.device_id, level=4, keepalive=KEEPALIVE_S, clean=False,
                                      username=self.device_id, password=self.password,
                                      will=(self.topic + b"death", loadgen.death_payload(ses, "lost"))))
            decoder = wire.Decoder()
            connack = await asyncio.wait_for(self._connack(reader, decoder), CONNECT_TIMEOUT_S)
            if connack.code:
                raise ConnectionLost(wire.reason_text(connack.code, 4))
            if self.connections and not connack.session_present:
                self.lost_sessions += 1
            self.connections += 1
            self.connected_node = self.node
            writer.write(wire.publish(self.topic + b"birth", self._birth(ses), packet_id=self._packet_id(),
                                      retain=True, level=4))
            self.stream, self.next_seq = ses, 0
            heard = [time.monotonic()]
            async with asyncio.TaskGroup() as group:
                reading = group.create_task(self._read(reader, decoder, heard), name=f"{self.device_id}-read")
                await self._write(writer, heard, reading)
                reading.cancel()
            writer.write(wire.publish(self.topic + b"death", loadgen.death_payload(ses, "shutdown"),
                                      packet_id=self._packet_id(), retain=True, level=4) + wire.DISCONNECT)
            await writer.drain()
        except* (ConnectionLost, OSError, TimeoutError, wire.WireError) as group_err:
            raise group_err.exceptions[0] from None
        finally:
            writer.close()

    def _birth(self, ses: int) -> bytes:
        """loadgen's birth; `prev` names the stream stamped in before (not always ses - 1: a CONNECT
        that failed took a number too)."""
        prev = self.next_seq if self.stream is not None else None
        spec = loadgen.LoadSpec(port=0, prev_next_seq=prev)
        payload = loadgen.birth_payload(spec, ses)
        if self.stream is not None and self.stream != ses - 1:
            body = json.loads(payload)
            body["prev"]["ses"] = self.stream
            payload = json.dumps(body, separators=(",", ":")).encode()
        return payload

    async def _connack(self, reader: asyncio.StreamReader, decoder: wire.Decoder) -> wire.Connack:
        while True:
            data = await reader.read(65_536)
            if not data:
                raise ConnectionLost("closed during CONNECT")
            decoder.feed(data)
            packet = decoder.next()
            if packet is not None:
                ack = wire.parse_ack(*packet, 4)
                if ack.connack is None:
                    raise wire.WireError("no CONNACK")
                return ack.connack

    async def _read(self, reader: asyncio.StreamReader, decoder: wire.Decoder, heard: list[float]) -> None:
        while True:
            data = await reader.read(65_536)
            if not data:
                raise ConnectionLost("closed by the node")
            heard[0] = time.monotonic()
            decoder.feed(data)
            while (packet := decoder.next()) is not None:
                ack = wire.parse_ack(*packet, 4)
                if ack.kind == wire.PUBACK:
                    key = self._inflight.pop(ack.packet_id, None)
                    if key is not None:
                        self.acked.add(key)
                        self.ack_max_s = max(self.ack_max_s, time.monotonic() - self._first_sent[key])
                        self._forget(key)
                    else:
                        self._ids_used.discard(ack.packet_id)  # a birth's or death's
                    self._wake.set()

    async def _write(self, writer: asyncio.StreamWriter, heard: list[float], reading: asyncio.Task[None]) -> None:
        """Send what is pending, oldest first, up to the window; ping; return once finished."""
        ping_at = time.monotonic() + KEEPALIVE_S / 2
        while not reading.done():
            if self._finish.is_set() and not self.pending:
                return
            if time.monotonic() - heard[0] > KEEPALIVE_S * 1.5:
                raise ConnectionLost("silent")
            out = bytearray()
            for key, (payload, packet_id) in self.pending.items():
                if len(self._inflight) >= self.window:
                    break
                if packet_id in self._inflight:
                    continue
                again = bool(packet_id)  # sent on an earlier connection, not acked
                if again:
                    self.resent += 1
                else:
                    packet_id = self._packet_id()
                    self.pending[key] = (payload, packet_id)
                    self._first_sent[key] = time.monotonic()
                self._inflight[packet_id] = key
                self.sent.add(key)
                out += wire.publish(self.topic + b"telemetry", payload, packet_id=packet_id, retain=False,
                                    level=4, dup=again)
            if out:
                writer.write(bytes(out))
                await writer.drain()
            if time.monotonic() >= ping_at:
                writer.write(wire.PINGREQ)
                ping_at = time.monotonic() + KEEPALIVE_S / 2
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), 0.5)
            except TimeoutError:
                pass
        reading.result()  # the reader's error ends the connection

    def finish(self) -> None:
        """Stop after the pending messages are acked: a `shutdown` death and DISCONNECT."""
        self._finish.set()
        self._wake.set()


# --- the fleet ----------------------------------------------------------------------------------

@dataclass
class NatsFleet(Fleet):
    """ingest_durable's `fleet serve`, on the cluster: accounts kept by the fleet, MQTT 3.1.1, the
    other nodes to move to after a lost connection."""

    other_hosts: str = ""
    auth_file: Path | None = None
    pid_files: list[Path] = field(default_factory=list)

    def env(self, index: int) -> dict[str, str]:
        return {**super().env(index), "FLEET_BROKER_ACCOUNTS": "nats", "FLEET_MQTT_PROTOCOL": "3.1.1",
                "FLEET_MQTT_OTHER_HOSTS": self.other_hosts, "FLEET_NATS_AUTH_FILE": str(self.auth_file),
                "FLEET_NATS_PID_FILES": json.dumps([str(p) for p in self.pid_files]),
                "FLEET_OPS_TICK_S": "60"}

    def add_admin(self) -> None:
        subprocess.run([sys.executable, "-m", "fleet.cli", "user-add", ADMIN, "--role", "admin", "--password-stdin"],
                       input=ADMIN_PASSWORD.encode(), env=self.env(0), cwd=self.workdir, check=True,
                       capture_output=True)


@asynccontextmanager
async def database(backend: str, workdir: Path) -> AsyncIterator[str]:
    if backend == "postgres":
        async with fresh_database() as url:
            yield url
    else:
        yield f"sqlite://{workdir / 'fleet.sqlite3'}"


# --- one run ------------------------------------------------------------------------------------

@dataclass
class Counts:
    kill: bool
    published: int = 0  # numbered messages sent at least once
    acked: int = 0
    stored: int = 0
    lost: int = 0  # acked, not stored
    unacked_stored: int = 0
    unacked_missing: int = 0
    resent: int = 0
    dropped: int = 0
    ack_max_s: float = 0.0
    drops: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    sessions_not_present: int = 0  # reconnects whose CONNACK said the session was gone
    gaps_open: int = 0
    gaps_all: int = 0
    duplicates_db: int = 0
    duplicates_stats: int = 0
    moved: int = 0  # devices on the killed node at the kill
    back_s: float | None = None
    drain_s: float = 0.0  # stamping stopped -> everything acked
    store_s: float = 0.0  # stamping stopped -> the last row stored
    complete: bool = True
    load: str = ""
    notes: list[str] = field(default_factory=list)

    def line(self, label: str) -> str:
        back = ("-" if not self.kill else f"{self.back_s:.1f} s" if self.back_s is not None else "never")
        return (f"{label}: published {self.published:,}, acked {self.acked:,}, stored {self.stored:,}, "
                f"LOST {self.lost:,} (sent, not acked: {self.unacked_stored} stored, {self.unacked_missing} not); "
                f"gaps {self.gaps_open} open / {self.gaps_all} recorded; duplicates {self.duplicates_db} "
                f"(seq_stream) / {self.duplicates_stats} (ingest stats); re-sent {self.resent}; dropped "
                f"{self.dropped}; longest wait for a PUBACK {self.ack_max_s:.1f} s; reconnects {self.reconnects} "
                f"(session gone {self.sessions_not_present}; connections ended or failed: "
                f"{', '.join(f'{why} {n}' for why, n in self.drops.most_common()) or 'none'}); "
                f"devices on the killed node {self.moved if self.kill else '-'}, all back online {back}; "
                f"all acked {self.drain_s:.1f} s and stored {self.store_s:.1f} s after stamping stopped; "
                f"{self.load}" + ("" if self.complete else "; INCOMPLETE (stalled)"))


async def devices_list(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await http.get("/api/devices", params={"limit": 1000})
    response.raise_for_status()
    return {d["id"]: d for d in response.json()}


async def until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"broker_node_kill: {what} not within {timeout:.0f} s")
        await asyncio.sleep(POLL_S)


async def one_run(args: argparse.Namespace, kill: bool, workdir: Path) -> Counts:
    counts = Counts(kill)
    cluster = NatsCluster(workdir / "nats")
    await asyncio.to_thread(cluster.start)
    try:
        async with database(args.db, workdir) as url:
            fleet = NatsFleet(workdir, url, cluster.fleet_url(2), tag="nodekill",
                              other_hosts=",".join(f"127.0.0.1:{n.mqtt_port}" for n in cluster.nodes[:2]),
                              auth_file=cluster.auth_file, pid_files=cluster.pid_files)
            reader = Reader(url)
            try:
                await asyncio.to_thread(start_fleet, fleet, counts)
                await asyncio.to_thread(fleet.add_admin)
                await load(args, kill, cluster, fleet, reader, counts)
            finally:
                await asyncio.to_thread(fleet.stop_all)
                await asyncio.to_thread(reader.close)
            if counts.lost or not counts.complete:
                counts.notes += fleet.log_tail(lambda s: "ERROR" in s or "WARNING" in s)
                counts.notes += node_log(cluster)
    finally:
        await asyncio.to_thread(cluster.stop)
    return counts


def start_fleet(fleet: NatsFleet, counts: Counts, attempts: int = 3) -> None:
    """`fleet serve` until /healthz says it receives. On a cluster just started, the fleet's QoS 1
    SUBSCRIBE can be refused (the node timed out creating its JetStream consumer) and the fleet's
    link does not subscribe again on that connection: then it is restarted, and that is noted."""
    for attempt in range(1, attempts + 1):
        fleet.spawn(0)
        try:
            fleet.wait_healthy(0, timeout=30)
            return
        except TimeoutError:
            refused = fleet.log_tail(lambda s: "refused the subscription" in s, lines=1)
            counts.notes.append(f"fleet start {attempt}: not healthy in 30 s "
                                f"({refused[0] if refused else 'no refusal logged'}); restarted")
            fleet.stop_all()
    raise RuntimeError(f"fleet serve not healthy after {attempts} starts; its log: {fleet.log(0)}")


async def load(args: argparse.Namespace, kill: bool, cluster: NatsCluster, fleet: NatsFleet, reader: Reader,
               counts: Counts) -> None:
    ports = [n.mqtt_port for n in cluster.nodes]
    victim = cluster.nodes[args.node - 1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fleet.ports[0]}", timeout=30) as http:
        token = (await http.post("/api/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD}))
        token.raise_for_status()
        http.headers["Authorization"] = f"Bearer {token.json()['token']}"
        devices = []
        for i in range(args.devices):
            device_id = f"nk-{i:04d}"
            mqtt = await enroll(http, device_id, "pi", "w1")
            devices.append(Device(device_id, mqtt["password"], ports[i % 3:] + ports[:i % 3], rate=args.rate,
                                  window=args.window, queue=args.queue))
        async with asyncio.TaskGroup() as group:
            for d in devices:
                group.create_task(d.run(), name=f"{d.device_id}-link")
                group.create_task(d.stamp(), name=f"{d.device_id}-stamp")

            async def all_online() -> bool:
                listed = await devices_list(http)
                return all(listed.get(d.device_id, {}).get("online") for d in devices)

            await until(all_online, 120, "every device online in the fleet")
            await asyncio.sleep(args.before_s)
            began = time.monotonic()
            back: asyncio.Task[float] | None = None
            if kill:
                before = await devices_list(http)
                on_victim = [d.device_id for d in devices
                             if d.connected_node is not None and d.ports[d.connected_node] == victim.mqtt_port]
                counts.moved = len(on_victim)
                await asyncio.to_thread(victim.kill)
                began = time.monotonic()
                back = group.create_task(back_online(http, before, set(on_victim), began), name="back-online")
                print(f"  node {victim.name} SIGKILLed; {len(on_victim)} devices and the fleet were on it", flush=True)
            await asyncio.sleep(max(0.0, args.after_s - (time.monotonic() - began)))
            for d in devices:
                d.stop_stamping()
            stopped = time.monotonic()
            drained = await asyncio.gather(*(d.drained(args.stall_s) for d in devices))
            counts.drain_s = time.monotonic() - stopped
            sent = sum(len(d.sent) for d in devices)
            counts.complete = all(drained) and await stored_reach(reader, sent, args.stall_s)
            counts.store_s = time.monotonic() - stopped
            if back is not None:
                try:
                    counts.back_s = await asyncio.wait_for(back, max(1.0, 120 - (time.monotonic() - began)))
                except TimeoutError:
                    counts.back_s = None
            for d in devices:
                d.finish()
        stats = (await http.get("/api/ingest/stats")).json()
        counts.duplicates_stats = int(stats.get("duplicates", 0))
    await asyncio.to_thread(verdict, reader, devices, counts)
    counts.load = loadgen.load_average()


async def back_online(http: httpx.AsyncClient, before: dict[str, dict[str, Any]], moved: set[str],
                      killed_at: float) -> float:
    """Seconds from the kill until the fleet shows every moved device online in a newer session
    and every other device online."""
    while True:
        now = await devices_list(http)
        if all(d.get("online") and (device_id not in moved or (d.get("session") or 0) >
                                    (before[device_id].get("session") or 0)) for device_id, d in now.items()):
            return time.monotonic() - killed_at
        await asyncio.sleep(POLL_S)


async def stored_reach(reader: Reader, expected: int, stall_s: float) -> bool:
    """Until `expected` telemetry rows are stored (True) or none came for `stall_s` (False)."""
    last, changed = -1, time.monotonic()
    while True:
        count = int((await asyncio.to_thread(reader.rows, "SELECT count(*) FROM telemetry"))[0][0])
        if count >= expected:
            return True
        if count != last:
            last, changed = count, time.monotonic()
        elif time.monotonic() - changed > stall_s:
            return False
        await asyncio.sleep(POLL_S)


def verdict(reader: Reader, devices: list[Device], counts: Counts) -> None:
    stored: dict[str, set[Key]] = {d.device_id: set() for d in devices}
    epochs = 0
    for device_id, epoch, ses, seq in reader.rows("SELECT device_id, epoch, ses, seq FROM telemetry"):
        stored.setdefault(device_id, set()).add((int(ses), int(seq)))
        epochs += epoch != 0
    for d in devices:
        mine = stored[d.device_id]
        counts.published += len(d.sent)
        counts.acked += len(d.acked)
        counts.stored += len(mine)
        lost = d.acked - mine
        counts.lost += len(lost)
        counts.unacked_stored += len((d.sent - d.acked) & mine)
        counts.unacked_missing += len(d.sent - d.acked - mine)
        counts.resent += d.resent
        counts.dropped += d.dropped
        counts.ack_max_s = max(counts.ack_max_s, d.ack_max_s)
        counts.drops.update(d.drops)
        counts.reconnects += max(0, d.connections - 1)
        counts.sessions_not_present += d.lost_sessions
        for ses in sorted({s for s, _ in lost}):
            counts.notes.append(f"lost {d.device_id} ses {ses}: seq {ranges([q for s, q in lost if s == ses])}")
        if mine - d.sent:
            counts.notes.append(f"{d.device_id}: {len(mine - d.sent)} stored rows it never sent")
    if epochs:
        counts.notes.append(f"{epochs} rows stored in an epoch other than 0")
    gaps = reader.rows("SELECT device_id, ses, first_seq, last_seq, open FROM seq_gap ORDER BY device_id, ses")
    counts.gaps_all = len(gaps)
    counts.gaps_open = sum(1 for g in gaps if g[4])
    counts.notes += [f"gap recorded: {g[0]} ses {g[1]} seq {g[2]}-{g[3]}{' (open)' if g[4] else ''}"
                     for g in gaps[:10]]
    counts.duplicates_db = int(reader.rows("SELECT coalesce(sum(duplicates), 0) FROM seq_stream")[0][0])


def node_log(cluster: NatsCluster, lines: int = 20) -> list[str]:
    """The nodes' warnings and errors, the last `lines` of each."""
    out = []
    for node in cluster.nodes:
        found = [s for s in node.log.read_text(errors="replace").splitlines() if "[WRN]" in s or "[ERR]" in s]
        out += [f"{node.name} log ({len(found)} warnings/errors): {s}" for s in found[-lines:]]
    return out


# --- main ---------------------------------------------------------------------------------------

async def bench(args: argparse.Namespace) -> int:
    results: dict[bool, list[Counts]] = {False: [], True: []}
    for r in range(args.rounds):
        for kill in (False, True):
            label = f"round {r + 1} {'node ' + str(args.node) + ' killed' if kill else 'baseline, no kill'}"
            print(f"{label}: starting ({loadgen.load_average()})", flush=True)
            if args.keep is not None:
                counts = await one_run(args, kill, args.keep / f"round{r + 1}-{'kill' if kill else 'baseline'}")
            else:
                with tempfile.TemporaryDirectory(prefix="bench-nodekill-") as tmp:
                    counts = await one_run(args, kill, Path(tmp))
            results[kill].append(counts)
            print(counts.line(label), flush=True)
            for note in counts.notes[:40]:
                print(f"  {note}", flush=True)
    if args.rounds > 1:
        print(f"\nmedians of {args.rounds} rounds:")
        for kill, runs in results.items():
            def med(name: str, runs: list[Counts] = runs) -> float:
                return statistics.median(float(getattr(c, name)) for c in runs)
            backs = [c.back_s for c in runs if c.back_s is not None]
            print(f"  {'node killed' if kill else 'baseline   '}: published {med('published'):,.0f}, acked "
                  f"{med('acked'):,.0f}, stored {med('stored'):,.0f}, lost {med('lost'):,.0f} (max "
                  f"{max(c.lost for c in runs)}), gaps {med('gaps_all'):.0f}, duplicates {med('duplicates_db'):.0f}, "
                  f"re-sent {med('resent'):.0f}, longest PUBACK wait {med('ack_max_s'):.1f} s, "
                  f"reconnects {med('reconnects'):.0f}"
                  + (f", back online {statistics.median(backs):.1f} s ({len(backs)} of {len(runs)})"
                     if kill else ""))
    lost = sum(c.lost for runs in results.values() for c in runs)
    print(f"({loadgen.load_average()})")
    print(f"LOST {lost} acknowledged messages: exit 1" if lost else "nothing acknowledged was lost", flush=True)
    return 1 if lost else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--rate", type=float, default=5.0, help="telemetry messages/s per device")
    parser.add_argument("--before-s", type=float, default=10.0, help="load before the kill")
    parser.add_argument("--after-s", type=float, default=20.0, help="load after the kill")
    parser.add_argument("--node", type=int, choices=[1, 2, 3], default=3, help="the node killed (the fleet is on 3)")
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--rounds", type=int, default=1, help="baseline + kill runs")
    parser.add_argument("--window", type=int, default=100, help="unacknowledged publishes per device")
    parser.add_argument("--queue", type=int, default=10_000, help="messages a device keeps until acked")
    parser.add_argument("--stall-s", type=float, default=60.0, help="give up waiting after this long without progress")
    parser.add_argument("--keep", type=Path, help="keep each run's folder (node and fleet logs) under this one")
    args = parser.parse_args()
    if args.devices < 1 or args.devices > 1000 or args.rate <= 0:
        raise SystemExit("broker_node_kill: --devices 1..1000 and --rate > 0")
    print(f"{args.devices} devices x {args.rate:g} msg/s telemetry at QoS 1, {args.before_s:g} s before and "
          f"{args.after_s:g} s after the kill of node {args.node}; fleet on node 3 ({args.db}); "
          f"{loadgen.load_average()}", flush=True)
    try:
        return asyncio.run(bench(args))
    except (RuntimeError, TimeoutError) as err:
        print(f"broker_node_kill: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
