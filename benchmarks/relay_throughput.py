"""How fast do events go from a device to the IOC's webhook receiver? (docs/relay.md, "Measured")

Devices (one publisher process, QoS 1, through a private Mosquitto) send `motion` events; the
fleet stores them and relays each to a webhook receiver in another process, which verifies every
signature with the `standardwebhooks` package and notes when each message arrived.

Printed per run, and as medians over the runs:
- ingest: events stored per second (first publish to the last row committed): the same-run
  baseline the relay is compared against;
- relay: events received by the receiver per second (first publish to the last message received),
  and the ratio relay / ingest;
- latency device → receiver (the publisher's clock in the event to the receiver's clock at arrival,
  one machine) p50 / p99 / max, at full speed and in a paced run (`--paced-rate` events/s), where
  queueing does not dominate.
Nothing may be lost or arrive unsigned: the script fails if the receiver's count of distinct
`webhook-id`s differs from the events sent, or a signature does not verify.

    .venv/bin/python benchmarks/relay_throughput.py [--events 5000] [--devices 50] [--runs 3]
        [--paced-rate 200] [--paced-s 15] [--postgres]
"""

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.app import fleet_services
from fleet.ops.webhook_sign import new_secret
from fleet.relay.models import EndpointKind, RelayEndpoint, RelayRoute
from fleet.settings import Settings
from tests.support.mosquitto import Mosquitto, free_port, wait_port
from tests.support.postgres import fresh_database

SES_BASE = 1_795_000_000


def receiver(port: int, secret: str, conn: Connection) -> None:
    """A separate process: an HTTP server that verifies each message and notes its arrival."""
    import uvicorn
    from standardwebhooks.webhooks import Webhook

    verifier = Webhook(secret)
    seen: dict[str, tuple[float, float]] = {}  # webhook-id -> (publish time, arrival)
    bad = 0
    duplicates = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal bad, duplicates
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/report":
            conn.send((seen, bad, duplicates))
            status = 200
        else:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            arrived = time.time()
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            try:
                verifier.verify(body, headers)
                published = json.loads(body)["data"]["event"]["data"]["t_pub"]
                if headers["webhook-id"] in seen:
                    duplicates += 1
                else:
                    seen[headers["webhook-id"]] = (published, arrived)
                status = 204
            except Exception:
                bad += 1
                status = 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def publish(port: int, events: int, devices: int, ses: int, rate: float | None) -> None:
    """A separate process: `events` motion events from `devices` devices, round robin, QoS 1;
    paced at `rate` events/s when given."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-relay-pub-{ses}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    last = None
    for i in range(events):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        device, seq = i % devices, i // devices
        now = time.time()
        body = {"v": 1, "ses": ses, "seq": seq, "ts": int(now * 1000), "id": f"mot-b-{ses}-{seq}",
                "type": "motion", "phase": "start", "category": "security",
                "data": {"camera": "cam1", "t_pub": now}}
        last = client.publish(f"ioc/v1/d/bench-{device:05d}/event", json.dumps(body), qos=1)
    assert last is not None
    last.wait_for_publish(300)
    client.loop_stop()
    client.disconnect()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def one_run(broker_port: int, database_url: str, args: argparse.Namespace, ses: int,
                  rate: float | None, events: int) -> dict[str, float]:
    secret = new_secret()
    receiver_port = free_port()
    parent, child = multiprocessing.Pipe()
    receiving = multiprocessing.Process(target=receiver, args=(receiver_port, secret, child), daemon=True)
    receiving.start()
    await asyncio.to_thread(wait_port, receiver_port)
    settings = Settings(database_url=database_url, mqtt_url=f"mqtt://127.0.0.1:{broker_port}",
                        mqtt_client_id=f"bench-relay-fleet-{ses}", broker_accounts="none",
                        ops_tick_s=60)
    try:
        async with fleet_services(settings) as runtime:
            endpoint = await RelayEndpoint.create(name="bench", kind=EndpointKind.WEBHOOK, secret=secret,
                                                  url=f"http://127.0.0.1:{receiver_port}/hook",
                                                  snapshot_wait_s=0)
            await RelayRoute.create(name="bench-motion", endpoint=endpoint, types=["motion"])
            assert runtime.relay is not None
            await runtime.relay.routes_changed()
            start = time.perf_counter()
            proc = multiprocessing.Process(target=publish, args=(broker_port, events, args.devices, ses, rate))
            proc.start()
            deadline = time.monotonic() + 900
            stored_at = None
            while True:
                if stored_at is None and runtime.stats.stored >= events:
                    stored_at = time.perf_counter()
                pending = await endpoint.deliveries.filter(status="pending").count()
                delivered = await endpoint.deliveries.filter(status="delivered").count()
                if delivered >= events and pending == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stored {runtime.stats.stored}, delivered {delivered}/{events}")
                await asyncio.sleep(0.05)
            await asyncio.to_thread(proc.join)
            if sum(runtime.stats.rejected.values()):
                raise RuntimeError(f"rejected: {dict(runtime.stats.rejected)}")
    finally:
        import httpx
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{receiver_port}/report")
        seen, bad, duplicates = await asyncio.to_thread(parent.recv)
        receiving.terminate()
        receiving.join()
    if bad or len(seen) != events:
        raise RuntimeError(f"receiver: {len(seen)} distinct of {events}, {bad} failed verification")
    assert stored_at is not None
    arrivals = [arrived for _, arrived in seen.values()]
    latencies = [arrived - published for published, arrived in seen.values()]
    first_pub = min(published for published, _ in seen.values())
    relay_s = max(arrivals) - first_pub
    ingest_s = stored_at - start
    return {"ingest": events / ingest_s, "relay": events / relay_s, "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99), "max": max(latencies), "duplicates": duplicates}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paced-rate", type=float, default=200.0, help="events/s of the paced run")
    parser.add_argument("--paced-s", type=float, default=15.0, help="length of the paced run")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    backend = "postgres" if args.postgres else "sqlite"
    results: list[dict[str, float]] = []
    paced: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        broker = Mosquitto(Path(tmp) / "mqtt", extra_conf="max_inflight_messages 1000\nmax_queued_messages 0\n")
        broker.start()
        try:
            for run in range(args.runs):
                for kind in ("full", "paced"):
                    ses = SES_BASE + run * 2 + (kind == "paced")
                    rate = args.paced_rate if kind == "paced" else None
                    events = int(args.paced_rate * args.paced_s) if kind == "paced" else args.events
                    if args.postgres:
                        async with fresh_database() as url:
                            figures = await one_run(broker.port, url, args, ses, rate, events)
                    else:
                        figures = await one_run(broker.port, f"sqlite://{tmp}/fleet-{run}-{kind}.sqlite3",
                                                args, ses, rate, events)
                    (results if kind == "full" else paced).append(figures)
                    print(f"run {run + 1} {kind:5s} ({events} events): ingest {figures['ingest']:,.0f} ev/s, "
                          f"relay {figures['relay']:,.0f} ev/s ({figures['relay'] / figures['ingest']:.2f}), "
                          f"latency p50 {figures['p50'] * 1000:.0f} ms p99 {figures['p99'] * 1000:.0f} ms "
                          f"max {figures['max'] * 1000:.0f} ms, duplicates {figures['duplicates']:.0f}", flush=True)
        finally:
            broker.kill()

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"\n{backend}, {args.devices} devices, medians of {args.runs} runs:")
    print(f"  full speed, {args.events} events: ingest {med(results, 'ingest'):,.0f} events/s (baseline), "
          f"relayed to the receiver {med(results, 'relay'):,.0f} events/s "
          f"= {med(results, 'relay') / med(results, 'ingest'):.2f} of ingest; latency p50 "
          f"{med(results, 'p50') * 1000:.0f} ms, p99 {med(results, 'p99') * 1000:.0f} ms")
    print(f"  paced at {args.paced_rate:.0f} events/s for {args.paced_s:.0f} s: latency device -> receiver p50 "
          f"{med(paced, 'p50') * 1000:.0f} ms, p99 {med(paced, 'p99') * 1000:.0f} ms, "
          f"max {max(r['max'] for r in paced) * 1000:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
