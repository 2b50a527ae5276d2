"""A fleet killed (SIGKILL) again and again while it delivers to the IOC's webhook receiver: is
anything lost, sent twice, or out of order? (docs/relay.md, "Measured: kills mid-delivery")

The support code of tests/fleet/test_relay_kill.py is imported, not copied: its `serve` (a
`fleet serve` subprocess, waited for until /healthz answers) and `prepare` (the device, a webhook
endpoint with `timeout_s` 4 and `retry_base_s` 0.2, a route for every event), and
tests/fleet/relay_kit.py's `webhook_receiver` (an http.server in a thread verifying every call with
the `standardwebhooks` package), here answering each call after a random 0-50 ms.

`--devices` ScriptedDevices (tests/support/device.py; each its own stream) publish `--events`
motion events round robin through a private Mosquitto at a steady `--rate`. Meanwhile the fleet
(SQLite, or `--postgres` for a fresh PostgreSQL database) is SIGKILLed `--kills` times at random
moments (from `--seed`, printed): at each moment the script waits until the receiver holds at
least one call (a send in flight), kills the fleet and starts it again at once. Then it waits until
every event has reached the receiver and the fleet's /metrics shows no pending delivery, stops the
fleet (SIGTERM) and prints: events published, event rows stored, distinct webhook-ids received,
calls received, duplicates, lost, signature failures, order per device after dedupe, and the time
from the last publish to the last delivery. Exit 1 when anything is lost, a signature fails or a
device's events are out of order.

    .venv/bin/python benchmarks/relay_kills.py [--events 1000] [--devices 20] [--kills 10]
        [--rate 25] [--seed N] [--postgres]
"""

import argparse
import asyncio
import os
import random
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.db import database
from fleet.models import Device, DeviceStatus, EventRecord, RejectedMessage, SeqGap
from fleet.ops.webhook_sign import new_secret
from fleet.relay.models import RelayDelivery
from fleet.settings import Settings
from tests.fleet.relay_kit import Call, Receiver, event, webhook_receiver
from tests.fleet.test_relay_kill import ROOT, prepare, serve
from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.postgres import fresh_database
from tests.support.wait import wait_for

MAX_DELAY_S = 0.05
SES = 1_795_200_000


class JitteredReceiver(Receiver):
    """relay_kit's receiver, each call held a random 0-50 ms before its answer. The handler reads
    `delay_s` twice per call (`if receiver.delay_s: time.sleep(receiver.delay_s)`): the first read
    draws the delay and counts the call as begun, the second gives the same delay back."""

    rng: random.Random
    begun: int
    local: threading.local

    @property
    def delay_s(self) -> float:
        drawn = getattr(self.local, "drawn", None)
        if drawn is not None:
            self.local.drawn = None
            return float(drawn)
        with self.lock:
            self.begun += 1
            delay = max(self.rng.uniform(0.0, MAX_DELAY_S), 1e-4)
        self.local.drawn = delay
        return delay

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        pass

    def in_flight(self) -> int:
        with self.lock:
            return self.begun - len(self.calls)


PRINT_ERROR = socketserver.BaseServer.handle_error
UNANSWERED = 0  # answers the receiver could not write: the fleet that sent the call was killed


def quiet_handle_error(self: socketserver.BaseServer, request: Any, client_address: Any) -> None:
    """The receiver's server, in this process only: a broken pipe or reset while answering a killed
    fleet is counted, not printed as a traceback; anything else is printed as before."""
    global UNANSWERED
    if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
        UNANSWERED += 1
    else:
        PRINT_ERROR(self, request, client_address)


def jittered(receiver: Receiver, seed: int) -> JitteredReceiver:
    receiver.__class__ = JitteredReceiver
    assert isinstance(receiver, JitteredReceiver)
    receiver.rng, receiver.begun, receiver.local = random.Random(seed), 0, threading.local()
    return receiver


def pending_deliveries(port: int) -> int | None:
    """`fleet_relay_deliveries{status="pending"}` from the fleet's /metrics (loopback: no token)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return None
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("fleet_relay_deliveries{") and 'status="pending"' in line)


async def set_up(settings: Settings, devices: list[str], url: str, secret: str) -> None:
    await prepare(settings, devices[0], url, secret)
    async with database(settings):
        for device in devices[1:]:
            await Device.create(id=device, kind="pi", ward="ben-nghe", status=DeviceStatus.ACTIVE)


async def stored(settings: Settings) -> tuple[int, dict[str, int], int, int]:
    async with database(settings):
        statuses: dict[str, int] = defaultdict(int)
        for row in await RelayDelivery.all().values("status"):
            statuses[str(getattr(row["status"], "value", row["status"]))] += 1
        return (await EventRecord.all().count(), dict(statuses), await RejectedMessage.all().count(),
                await SeqGap.all().count())


def run(args: argparse.Namespace, database_url: str, workdir: Path) -> int:
    rng = random.Random(args.seed)
    settings = Settings(database_url=database_url, snapshot_dir=workdir / "snapshots")
    devices = [f"kill-{i:03d}" for i in range(args.devices)]
    broker = Mosquitto(workdir / "mqtt")
    broker.start()
    secret = new_secret()
    try:
        with webhook_receiver(secret) as plain:
            receiver = jittered(plain, args.seed + 1)
            asyncio.run(set_up(settings, devices, receiver.url, secret))
            env = {**os.environ, "PYTHONPATH": str(ROOT), "FLEET_DATABASE_URL": database_url,
                   "FLEET_MQTT_URL": broker.url, "FLEET_MQTT_CLIENT_ID": f"fleet-kills-{args.seed}",
                   "FLEET_BROKER_ACCOUNTS": "none", "FLEET_SNAPSHOT_DIR": str(workdir / "snapshots")}
            port = free_port()
            proc = serve(workdir, env, port)
            scripted = [ScriptedDevice(broker.port, d, ses=SES + i, will=False) for i, d in enumerate(devices)]
            published = 0
            last_publish = 0.0
            duration = args.events / args.rate
            start = time.monotonic()

            def publish() -> None:
                nonlocal published, last_publish
                for i in range(args.events):
                    delay = start + i / args.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    event(scripted[i % len(scripted)], data={"i": i})
                    published += 1
                last_publish = time.monotonic()

            publisher = threading.Thread(target=publish, name="publisher")
            publisher.start()
            moments = sorted(rng.uniform(0.5, duration) for _ in range(args.kills))
            try:
                for k, moment in enumerate(moments, 1):
                    time.sleep(max(0.0, start + moment - time.monotonic()))
                    wait_for(lambda: receiver.in_flight() > 0, timeout=120, interval=0.001,
                             what=f"a send in flight for kill {k}")
                    at, held, so_far = time.monotonic() - start, receiver.in_flight(), len(receiver.calls)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                    down = time.monotonic()
                    proc = serve(workdir, env, port)
                    print(f"kill {k:2d} at {at:6.2f} s (planned {moment:6.2f} s): {held} send(s) in flight, "
                          f"{so_far} calls received so far, {published} published; answering again after "
                          f"{time.monotonic() - down:.1f} s", flush=True)
                publisher.join()

                seen = time.monotonic()

                def settled() -> bool:
                    nonlocal seen
                    distinct = len({c.id for c in receiver.calls})
                    if time.monotonic() - seen > 10:
                        seen = time.monotonic()
                        print(f"  waiting: {distinct} distinct of {args.events}, {len(receiver.calls)} calls, "
                              f"{receiver.in_flight()} in flight, pending {pending_deliveries(port)}", flush=True)
                    if distinct >= args.events:
                        return receiver.in_flight() == 0 and pending_deliveries(port) == 0
                    # events the ingest lost (acknowledged, not yet stored, when killed) never come:
                    # settled when nothing is pending or in flight and no call came for 15 s (a lease is 9 s)
                    quiet = time.monotonic() - max((c.at for c in receiver.calls), default=start) > 15
                    return quiet and receiver.in_flight() == 0 and pending_deliveries(port) == 0
                wait_for(settled, timeout=args.settle_s, interval=0.2, what="every event delivered, none pending")
            finally:
                for dev in scripted:
                    dev.close()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                publisher.join()
            calls = list(receiver.calls)
    finally:
        broker.kill()
    rows, statuses, rejected, gaps = asyncio.run(stored(settings))
    ids = [c.id for c in calls]
    first: dict[str, Call] = {}
    for c in calls:
        first.setdefault(c.id, c)
    distinct = len(first)
    bad = sum(1 for c in calls if c.verified_with != [secret])
    per_device: dict[str, list[int]] = defaultdict(list)
    for c in first.values():  # dict order: first arrival
        body = c.json()["data"]
        per_device[body["device"]["id"]].append(body["stream"]["seq"])
    in_order = [d for d, seqs in per_device.items() if seqs == sorted(set(seqs))]  # rising; gaps allowed
    lost = published - distinct
    last_new = max(c.at for c in first.values())
    print(f"\n{'postgres' if args.postgres else 'sqlite'}, seed {args.seed}: {args.events} events from "
          f"{args.devices} devices at {args.rate:g} events/s, {args.kills} SIGKILLs mid-delivery, receiver "
          f"answering after 0-{MAX_DELAY_S * 1000:.0f} ms")
    print(f"  events published:            {published}")
    print(f"  events stored (event rows):  {rows}")
    print(f"  ingest: rejected messages {rejected}, seq gaps recorded {gaps}")
    print(f"  deliveries by status:        {', '.join(f'{s} {n}' for s, n in sorted(statuses.items()))}")
    print(f"  distinct webhook-ids:        {distinct}")
    print(f"  calls received:              {len(ids)}")
    print(f"  duplicates (calls-distinct): {len(ids) - distinct}")
    print(f"  lost (published-distinct):   {lost}: {published - rows} not stored by the ingest, "
          f"{rows - distinct} stored but not delivered")
    print(f"  answers cut by a kill:       {UNANSWERED} (broken pipe or reset at the receiver)")
    print(f"  signature failures:          {bad}")
    print(f"  order per device (deduped):  {'yes' if len(in_order) == len(per_device) else 'no'} "
          f"({len(in_order)} of {len(per_device)} devices in order)")
    print(f"  last publish -> last event delivered: {last_new - last_publish:.2f} s "
          f"(last call of any kind: {max(c.at for c in calls) - last_publish:.2f} s)")
    return 1 if lost or bad or len(in_order) != len(per_device) else 0


async def run_postgres(args: argparse.Namespace, workdir: Path) -> int:
    async with fresh_database() as url:
        return await asyncio.to_thread(run, args, url, workdir)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=25.0, help="events/s, all devices together")
    parser.add_argument("--seed", type=int, default=None, help="of the kill moments (default: random, printed)")
    parser.add_argument("--settle-s", type=float, default=300.0, help="bound on the wait for the last delivery")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    socketserver.BaseServer.handle_error = quiet_handle_error  # type: ignore[method-assign]
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    print(f"seed {args.seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-relay-kills-") as tmp:
        workdir = Path(tmp)
        try:
            if args.postgres:
                return asyncio.run(run_postgres(args, workdir))
            return run(args, f"sqlite://{workdir / 'fleet.sqlite3'}", workdir)
        except BaseException:
            log = workdir / "fleet.log"
            if log.exists():
                print("fleet.log, its end:\n" + log.read_text()[-3000:], file=sys.stderr)
            if (workdir / "fleet.sqlite3").exists():
                import sqlite3
                db = sqlite3.connect(workdir / "fleet.sqlite3")
                print("events stored:", db.execute("SELECT count(*) FROM event").fetchone(), file=sys.stderr)
                for row in db.execute("SELECT status, claim IS NOT NULL, count(*), min(next_at), max(attempts), "
                                      "count(DISTINCT device_id), max(last_error) FROM relay_delivery GROUP BY 1, 2"):
                    print("deliveries:", row, file=sys.stderr)
            raise


if __name__ == "__main__":
    sys.exit(main())
