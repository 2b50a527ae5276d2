"""How fast does the fleet store telemetry? Messages/s through Mosquitto into the database.

Baseline, measured in the same run on the same broker and publisher: a bare paho subscriber
that only counts what arrives (the ceiling the broker and the client library set). The figure
that matters is the ratio ingest / baseline; absolute numbers move with the machine's load.

    .venv/bin/python benchmarks/ingest_rate.py [--messages 20000] [--devices 50] [--rounds 3] [--postgres]
        [--events [--routes N]]

--events publishes camera events instead of telemetry; --routes N adds N relay routes that match
every event, each to its own (disabled) webhook endpoint: each event then also makes N relay
deliveries in the ingest's transaction (docs/relay.md), the cost measured without the sending.

--backlog isolates the fleet from the publisher's CPU: the load (benchmarks/loadgen.py, telemetry
only, no births) is published while the subscriber is offline, into its persistent session on a
broker that keeps everything (max_queued_messages 0); then the subscriber comes back and drains
it. The baseline is `mosquitto_sub -q 1` (C) draining the same backlog, timed first to last
message; the fleet is timed from its first message received to the last one committed.
--instances N drains with N fleet processes sharing one subscription ($share/…, FLEET_MQTT_SHARED_GROUP).
Each drain's CPU is printed in µs per message: the broker's, the drainer's (mosquitto_sub, or the
fleet's processes from their start to their stop) and the PostgreSQL server's (its processes, and
the backends that ended, through the postmaster's children's times), read from /proc: on 2 cores
that the three share, the ratio of rates is close to the ratio of these sums.

    .venv/bin/python benchmarks/ingest_rate.py --backlog [--messages 100000] [--devices 1000]
        [--postgres] [--no-sqlite] [--instances 2]
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.app import fleet_services
from fleet.settings import Settings
from tests.support.mosquitto import Mosquitto
from tests.support.postgres import fresh_database


def publish(port: int, messages: int, devices: int, ses: int, events: bool = False) -> None:
    """A separate process: `devices` devices' telemetry, round robin, QoS 1."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{ses}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    last = None
    for i in range(messages):
        device = i % devices
        seq = i // devices
        if events:
            body: dict[str, object] = {"v": 1, "ses": ses, "seq": seq, "ts": 1795766400000 + i, "id": f"mot-{seq}",
                                       "type": "motion", "phase": "start", "category": "security",
                                       "data": {"camera": "cam1", "boxes": [[10, 20, 30, 40]]}}
        else:
            body = {"v": 1, "ses": ses, "seq": seq, "ts": 1795766400000 + i, "role": "sim",
                    "r": {"temp_c": 30.5, "humidity_pct": 70.0, "pm25": 12.0 + (i % 7)}}
        kind = "event" if events else "telemetry"
        last = client.publish(f"ioc/v1/d/bench-{device:05d}/{kind}", json.dumps(body), qos=1)
    assert last is not None
    last.wait_for_publish(120)
    client.loop_stop()
    client.disconnect()


def start_publisher(port: int, messages: int, devices: int, ses: int,
                    events: bool = False) -> multiprocessing.Process:
    proc = multiprocessing.Process(target=publish, args=(port, messages, devices, ses, events))
    proc.start()
    return proc


def baseline(port: int, messages: int, devices: int, ses: int, events: bool = False) -> float:
    """Messages/s that a subscriber doing nothing but counting receives."""
    count = 0
    done = threading.Event()
    first: list[float] = []

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal count
        if not first:
            first.append(time.perf_counter())
        count += 1
        if count == messages:
            done.set()

    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-base-{ses}")
    client.on_message = on_message
    client.on_subscribe = lambda *a: ready.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe("ioc/v1/d/+/#", qos=1)
    ready.wait(10)
    start = time.perf_counter()
    proc = start_publisher(port, messages, devices, ses, events)
    if not done.wait(300):
        raise RuntimeError(f"baseline received {count}/{messages}")
    elapsed = time.perf_counter() - start
    proc.join()
    client.loop_stop()
    client.disconnect()
    return messages / elapsed


async def add_routes(count: int) -> None:
    """`count` routes matching every event, each to its own disabled endpoint (nothing is sent)."""
    from fleet.ops.webhook_sign import new_secret
    from fleet.relay.models import EndpointKind, RelayEndpoint, RelayRoute
    for n in range(count):
        endpoint = await RelayEndpoint.create(name=f"bench-{n}", kind=EndpointKind.WEBHOOK, enabled=False,
                                              url="http://127.0.0.1:9/", secret=new_secret())
        await RelayRoute.create(name=f"bench-{n}", endpoint=endpoint)


async def ingest(port: int, database_url: str, messages: int, devices: int, ses: int, events: bool = False,
                 routes: int = 0) -> float:
    """Messages/s from first publish to the last row committed."""
    settings = Settings(database_url=database_url, mqtt_url=f"mqtt://127.0.0.1:{port}",
                        mqtt_client_id=f"bench-fleet-{ses}", broker_accounts="none")  # an open test broker
    async with fleet_services(settings) as runtime:
        if routes:
            await add_routes(routes)
            assert runtime.relay is not None
            await runtime.relay.routes_changed()
        start = time.perf_counter()
        proc = await asyncio.to_thread(start_publisher, port, messages, devices, ses, events)
        deadline = time.monotonic() + 600
        while runtime.stats.stored + runtime.stats.duplicates < messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ingest stored {runtime.stats.stored}/{messages}")
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        await asyncio.to_thread(proc.join)
        if sum(runtime.stats.rejected.values()):
            raise RuntimeError(f"rejected: {dict(runtime.stats.rejected)}")
        return messages / elapsed


def _fleet_settings(port: int, database_url: str, client_id: str, group: str | None, batch_max: int) -> Settings:
    return Settings(database_url=database_url, mqtt_url=f"mqtt://127.0.0.1:{port}", mqtt_client_id=client_id,
                    mqtt_shared_group=group, broker_accounts="none", ingest_batch_max=batch_max)


async def _fleet_instance(settings: Settings, drain: bool, done: Any, stamps: Any, index: int, total: int) -> None:
    """Without `drain`: make the instance's session and subscription, then leave. With it: drain
    until all instances together have stored `total`; stamps[2i], [2i+1]: first received, last stored."""
    async with fleet_services(settings) as runtime:
        if not drain:
            await asyncio.sleep(1.0)  # the subscription is made on connect
            return
        profiler = None
        if os.environ.get("BENCH_PYSPY"):  # a py-spy profile of the drain: raw stacks to $BENCH_PYSPY.<index>
            profiler = subprocess.Popen(["py-spy",  # noqa: ASYNC220 (started once, never awaited)
                                          "record", "-r", "200", "-f", "raw", "--nonblocking", "-o",
                                         f"{os.environ['BENCH_PYSPY']}.{index}", "--pid", str(os.getpid())],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = 0.0
        while True:
            if not first and runtime.stats.received:
                first = time.time()
            count = runtime.stats.stored + runtime.stats.duplicates
            if count != done[index]:
                done[index] = count
                stamps[2 * index + 1] = time.time()
            if sum(done) >= total:
                break
            await asyncio.sleep(0.005)
        stamps[2 * index] = first
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)


def _fleet_process(settings: Settings, drain: bool, done: Any, stamps: Any, index: int, total: int) -> None:
    asyncio.run(_fleet_instance(settings, drain, done, stamps, index, total))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process, and of its children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK  # utime, stime, cutime, cstime


def postgres_cpu_s() -> float:
    """CPU seconds of the PostgreSQL server: its live processes, and through the postmaster's
    children's times, the backends that have ended (a fleet's connections, closed at its stop)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        # a process that ends meanwhile has no /proc entry left: its time is in its parent's
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                total += cpu_s(int(entry.name))
    return total


def children_cpu_s() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Cpu:
    """Where a drain's CPU went: the broker, the drainer (the fleet's processes, or mosquitto_sub:
    children of this process that end with the drain) and PostgreSQL, in µs per message."""

    def __init__(self, broker_pid: int) -> None:
        self.broker_pid = broker_pid
        self.start = (cpu_s(broker_pid), children_cpu_s(), postgres_cpu_s())

    def per_message(self, messages: int) -> dict[str, float]:
        end = (cpu_s(self.broker_pid), children_cpu_s(), postgres_cpu_s())
        broker, drainer, postgres = (1e6 * (b - a) / messages for a, b in zip(self.start, end, strict=True))
        return {"broker": broker, "drainer": drainer, "postgres": postgres}


def backlog_round(port: int, database_url: str, spec: Any, instances: int, tag: str, batch_max: int,
                  cpu: dict[str, float] | None = None, broker_pid: int | None = None) -> float:
    """Publish `spec` while the fleet's instances are offline, then time their drain of it. With
    `broker_pid`, `cpu` gets the drain's CPU per message (class Cpu; the fleet's start and stop included)."""
    from loadgen import expected_total, run
    total = expected_total(spec)
    group = f"bench{tag}" if instances > 1 else None
    ids = [f"bench-fleet-{tag}-{i}" for i in range(instances)]
    done = multiprocessing.Array("q", instances)
    stamps = multiprocessing.Array("d", 2 * instances)
    for i, client_id in enumerate(ids):  # one by one: the first makes the schema
        proc = multiprocessing.Process(target=_fleet_process, args=(
            _fleet_settings(port, database_url, client_id, group, batch_max), False, done, stamps, i, total))
        proc.start()
        proc.join(120)
        if proc.is_alive():  # its stop hung: the session and subscription are made by then
            proc.terminate()
            proc.join()
    run(spec)
    meter = Cpu(broker_pid) if broker_pid is not None else None
    procs = [multiprocessing.Process(target=_fleet_process, args=(
        _fleet_settings(port, database_url, client_id, group, batch_max), True, done, stamps, i, total))
        for i, client_id in enumerate(ids)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(900)
    if sum(done) < total:
        raise RuntimeError(f"fleet stored {sum(done)}/{total}")
    if meter is not None and cpu is not None:
        cpu.update(meter.per_message(total))
    first = min(stamps[2 * i] for i in range(instances))
    last = max(stamps[2 * i + 1] for i in range(instances))
    return total / (last - first)


async def _pg_round(port: int, spec: Any, instances: int, tag: str, batch_max: int, cpu: dict[str, float],
                    broker_pid: int) -> float:
    async with fresh_database() as url:
        return await asyncio.to_thread(backlog_round, port, url, spec, instances, tag, batch_max, cpu, broker_pid)


def backlog(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from loadgen import BareSubscriber, LoadSpec, expected_total, load_average, run
    backends = ([] if args.no_sqlite else ["sqlite"]) + (["postgres"] if args.postgres else [])
    results: dict[str, list[float]] = {"baseline": []} | {b: [] for b in backends}
    cpus: dict[str, list[dict[str, float]]] = {k: [] for k in results}
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
            broker = Mosquitto(Path(tmp) / "mqtt",
                               extra_conf="max_queued_messages 0\nmax_inflight_messages 1000\n")
            broker.start()
            try:
                def spec(n: int, broker: Any = broker, round_: int = round_) -> LoadSpec:
                    return LoadSpec(port=broker.port, devices=args.devices, messages=args.messages,
                                    mix={"telemetry": 100}, births=False, deaths="none", ses=1_800_000_000 + n,
                                    prefix=f"r{round_}n{n}")
                base_spec = spec(0)
                sub = BareSubscriber(broker.port, f"bare-{round_}", Path(tmp))
                sub.make_session()
                run(base_spec)
                assert broker.proc is not None
                pid = broker.proc.pid
                meter = Cpu(pid)
                sub.start(expected_total(base_spec))
                got, first, last = sub.wait()
                results["baseline"].append((got - 1) / max(last - first, 1e-9))
                cpus["baseline"].append(meter.per_message(expected_total(base_spec)))
                for n, backend in enumerate(backends, start=1):
                    cpu: dict[str, float] = {}
                    if backend == "sqlite":
                        url = f"sqlite://{tmp}/fleet.sqlite3"
                        results[backend].append(backlog_round(broker.port, url, spec(n), args.instances,
                                                              f"{round_}{n}", args.batch_max, cpu, pid))
                    else:
                        results[backend].append(asyncio.run(_pg_round(broker.port, spec(n), args.instances,
                                                                      f"{round_}{n}", args.batch_max, cpu, pid)))
                    cpus[backend].append(cpu)
            finally:
                broker.kill()
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} msg/s" for k, v in results.items())
              + f"; {load_average()}", flush=True)
        print("  CPU µs per message: " + "; ".join(f"{k} {_cpu_text(v[-1])}" for k, v in cpus.items()), flush=True)
    base = statistics.median(results["baseline"])
    print(f"\nbacklog of {args.messages:,} telemetry messages from {args.devices} devices, QoS 1, drained by "
          f"{args.instances} fleet instance(s), batches of up to {args.batch_max}, median of {args.rounds}:")
    print(f"  mosquitto_sub -q 1 draining the same backlog: {base:,.0f} msg/s")
    for backend in backends:
        rate = statistics.median(results[backend])
        print(f"  fleet ingest, stored in {backend:8s}: {rate:,.0f} msg/s  ({rate / base:.2f} of mosquitto_sub)")
    print(f"  ({load_average()})")
    print("CPU µs per message, medians (broker: Mosquitto; drainer: mosquitto_sub, or the fleet's processes "
          "from start to stop; postgres: the whole server):")
    for name, runs in cpus.items():
        print(f"  {name:9s} " + _cpu_text({k: statistics.median(r[k] for r in runs) for k in runs[0]}))


def _cpu_text(cpu: dict[str, float]) -> str:
    parts = [f"{k} {v:,.1f}" for k, v in cpu.items() if k != "postgres" or v >= 0.05]
    return ", ".join(parts) + f" = {sum(cpu.values()):,.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="also measure on PostgreSQL")
    parser.add_argument("--events", action="store_true", help="camera events instead of telemetry")
    parser.add_argument("--routes", type=int, default=0, help="relay routes matching every event (with --events)")
    parser.add_argument("--backlog", action="store_true", help="drain a backlog published while the fleet is offline")
    parser.add_argument("--instances", type=int, default=1, help="fleet processes sharing the subscription (--backlog)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite (--backlog)")
    parser.add_argument("--batch-max", type=int, default=Settings.model_fields["ingest_batch_max"].default,
                        help="FLEET_INGEST_BATCH_MAX of the fleet (--backlog)")
    args = parser.parse_args()
    if args.backlog:
        await asyncio.to_thread(backlog, args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        broker = Mosquitto(Path(tmp) / "mqtt", extra_conf="max_inflight_messages 1000\n")
        broker.start()
        try:
            backends = ["sqlite"] + (["postgres"] if args.postgres else [])
            results: dict[str, list[float]] = {"baseline": []} | {b: [] for b in backends}
            ses = 0
            for round_ in range(args.rounds):
                ses += 1
                results["baseline"].append(baseline(broker.port, args.messages, args.devices, ses, args.events))
                for backend in backends:
                    ses += 1
                    if backend == "sqlite":
                        url = f"sqlite://{tmp}/fleet-{round_}.sqlite3"
                        rate = await ingest(broker.port, url, args.messages, args.devices, ses, args.events,
                                            args.routes)
                    else:
                        async with fresh_database() as url:
                            rate = await ingest(broker.port, url, args.messages, args.devices, ses, args.events,
                                                args.routes)
                    results[backend].append(rate)
                print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} msg/s" for k, v in results.items()),
                      flush=True)
        finally:
            broker.kill()
    base = statistics.median(results["baseline"])
    what = f"event messages ({args.routes} relay routes matching each)" if args.events else "telemetry messages"
    print(f"\n{args.messages:,} {what} from {args.devices} devices, QoS 1, median of {args.rounds}:")
    print(f"  baseline (subscriber that only counts): {base:,.0f} msg/s")
    for backend in results.keys() - {"baseline"}:
        rate = statistics.median(results[backend])
        print(f"  fleet ingest, stored in {backend:8s}: {rate:,.0f} msg/s  ({rate / base:.2f} of baseline)")


if __name__ == "__main__":
    asyncio.run(main())
