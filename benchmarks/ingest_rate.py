"""How fast does the fleet store telemetry? Messages/s through Mosquitto into the database.

Baseline, measured in the same run on the same broker and publisher: a bare paho subscriber
that only counts what arrives (the ceiling the broker and the client library set). The figure
that matters is the ratio ingest / baseline; absolute numbers move with the machine's load.

    .venv/bin/python benchmarks/ingest_rate.py [--messages 20000] [--devices 50] [--rounds 3] [--postgres]
        [--events [--routes N]]

--events publishes camera events instead of telemetry; --routes N adds N relay routes that match
every event, each to its own (disabled) webhook endpoint: each event then also makes N relay
deliveries in the ingest's transaction (docs/relay.md), the cost measured without the sending.
"""

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="also measure on PostgreSQL")
    parser.add_argument("--events", action="store_true", help="camera events instead of telemetry")
    parser.add_argument("--routes", type=int, default=0, help="relay routes matching every event (with --events)")
    args = parser.parse_args()
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
