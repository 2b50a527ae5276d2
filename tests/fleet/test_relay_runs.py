"""Runs of a queue (docs/relay.md, "Retries, order, and the bounds"): a claim takes the due prefix
of a queue's oldest pending deliveries for one instance; a run sends them in order and stops at
its first failure, giving back the rest; two workers on one database deliver every event exactly
once, in order per device. Real ingest (Mosquitto, enrolled devices), a real receiver."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet.relay import delivery as policy
from fleet.relay import outbox
from fleet.relay.models import DeliveryStatus, RelayDelivery, RelayEndpoint
from fleet.relay.service import RelayWorker
from tests.fleet.relay_kit import Receiver, endpoint_for, event, now, runtime_of, webhook_receiver
from tests.support.device import ScriptedDevice
from tests.support.fleet import enroll, fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


@pytest.fixture
def receiver() -> Any:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
async def sqlite_fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url,
                              snapshot_dir=tmp_path / "snapshots")
    async with running_fleet(settings) as http:
        yield http


async def device(http: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> ScriptedDevice:
    await enroll(http, device_id, "pi", "ben-nghe")
    return ScriptedDevice(mosquitto.port, device_id, ses=1764520000, will=False)


async def queued(endpoint: RelayEndpoint, count: int) -> list[RelayDelivery]:
    async def enough() -> list[RelayDelivery]:  # empty: not yet
        rows = await RelayDelivery.filter(endpoint_id=endpoint.id).order_by("id")
        return rows if len(rows) >= count else []
    return await async_wait_for(enough, what=f"{count} deliveries queued")


async def test_a_claim_takes_the_due_prefix_once(sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto,
                                                 receiver: Receiver, device_id: str) -> None:
    endpoint = await endpoint_for(sqlite_fleet, receiver, enabled=False)  # the worker leaves it alone
    dev = await device(sqlite_fleet, mosquitto, device_id)
    for _ in range(5):
        event(dev)
    rows = await queued(endpoint, 5)
    moment = now()
    # the fourth not due yet (a retry's backoff): the run ends before it, to keep the order
    await RelayDelivery.filter(id=rows[3].id).update(next_at=moment + timedelta(seconds=60))
    heads = await policy.heads([endpoint.id])
    assert [h.id for h in heads] == [rows[0].id]
    run = await policy.claim_run(heads[0], endpoint, moment, "a" * 32)
    assert [r.id for r in run] == [r.id for r in rows[:3]]
    assert await policy.claim_run(heads[0], endpoint, moment, "b" * 32) == []  # held: nobody else
    lease = moment + timedelta(seconds=policy.lease_s(endpoint))
    held = await RelayDelivery.filter(claim="a" * 32).order_by("id").values_list("id", "next_at", "attempts")
    assert held == [(r.id, lease, 0) for r in rows[:3]]  # an attempt is counted when its outcome is recorded
    assert await policy.release([rows[1].id, rows[2].id], "b" * 32, moment) == 0  # not its claim
    assert await policy.release([r.id for r in rows[:3]], "a" * 32, moment) == 3
    assert await RelayDelivery.filter(endpoint_id=endpoint.id, claim__isnull=False).count() == 0
    again = await policy.claim_run((await policy.heads([endpoint.id]))[0], endpoint, moment, "c" * 32, limit=2)
    assert [r.id for r in again] == [r.id for r in rows[:2]]
    dev.close()


async def test_a_run_stops_at_its_first_failure_and_gives_back_the_rest(
        sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto, receiver: Receiver, device_id: str) -> None:
    endpoint = await endpoint_for(sqlite_fleet, receiver, enabled=False, retry_base_s=0.2, retry_max_s=0.4)
    dev = await device(sqlite_fleet, mosquitto, device_id)
    seqs = [event(dev, data={"i": i}) for i in range(5)]
    rows = await queued(endpoint, 5)  # all waiting: the first run takes the five
    receiver.answer(204, times=2)
    receiver.answer(500, body=b"hiccup")
    assert await outbox.enable(endpoint.id)
    relay = runtime_of(sqlite_fleet).relay
    assert relay is not None
    relay.nudge()

    async def all_delivered() -> list[RelayDelivery]:  # empty: not yet
        got = await RelayDelivery.filter(endpoint_id=endpoint.id).order_by("id")
        return got if all(r.status == DeliveryStatus.DELIVERED for r in got) else []
    done = await async_wait_for(all_delivered, what="every delivery recorded", timeout=30)
    sent = [c.json()["data"]["stream"]["seq"] for c in receiver.calls]
    # 1 and 2 delivered, 3 failed and the run stopped: 4 and 5 were not sent before 3's retry
    assert sent == [seqs[0], seqs[1], seqs[2], seqs[2], seqs[3], seqs[4]]
    assert [r.attempts for r in done] == [1, 1, 2, 1, 1]
    assert [r.id for r in done] == [r.id for r in rows]
    assert all(r.claim is None and r.done_at is not None and r.last_error is None for r in done)
    assert done[2].last_status == 204 and done[0].last_status == 204
    # the relay's figures on /metrics (docs/ops.md, "Metrics")
    runtime = runtime_of(sqlite_fleet)
    assert runtime.metrics is not None
    families = {f.name: f for f in text_string_to_metric_families((await runtime.metrics.scrape()).decode())}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    name = endpoint.name
    assert values[("fleet_relay_attempts_total", (("endpoint", name), ("outcome", "ok")))] == 5
    assert values[("fleet_relay_attempts_total", (("endpoint", name), ("outcome", "failed")))] == 1
    assert values[("fleet_relay_attempts_total", (("endpoint", name), ("outcome", "gone")))] == 0
    assert values[("fleet_relay_delivered_total", (("endpoint", name),))] == 5
    assert values[("fleet_relay_deliveries", (("endpoint", name), ("status", "delivered")))] == 5
    assert values[("fleet_relay_deliveries", (("endpoint", name), ("status", "pending")))] == 0
    assert values[("fleet_relay_endpoints", (("state", "enabled"),))] == 1
    assert values[("fleet_relay_delivery_latency_seconds_count", ())] == 5
    assert values[("fleet_metrics_source_up", (("source", "relay"),))] == 1
    dev.close()


async def test_two_workers_on_one_database_deliver_each_event_once_in_order(
        database_url: str, mosquitto: Mosquitto, receiver: Receiver, device_id: str, tmp_path: Path) -> None:
    """The fleet's own worker and a second one (as another instance would run it) share the outbox:
    every event reaches the receiver exactly once, each device's in the order stored."""
    settings = fleet_settings(database_url, mosquitto.url, snapshot_dir=tmp_path / "snapshots")
    async with running_fleet(settings) as http:
        endpoint = await endpoint_for(http, receiver, max_in_flight=3)
        other = RelayWorker(settings.model_copy(update={"relay_tick_s": 0.02}))  # it hears no nudge: it polls
        running = asyncio.create_task(other.run(), name="second-relay-worker")
        try:
            devices = [await device(http, mosquitto, f"{device_id}-{n}") for n in range(6)]
            sent: dict[str, list[int]] = {d.device_id: [] for d in devices}
            for i in range(25):
                for dev in devices:
                    sent[dev.device_id].append(event(dev, data={"i": i}))
            total = sum(len(s) for s in sent.values())

            async def delivered() -> bool:
                return await RelayDelivery.filter(endpoint_id=endpoint.id,
                                                  status=DeliveryStatus.DELIVERED).count() == total
            await async_wait_for(delivered, what=f"{total} deliveries recorded", timeout=60)
            calls = list(receiver.calls)
            assert len(calls) == total and len({c.id for c in calls}) == total  # each once
            for dev in devices:
                got = [c.json()["data"]["stream"]["seq"] for c in calls
                       if c.json()["data"]["device"]["id"] == dev.device_id]
                assert got == sent[dev.device_id]
            own = runtime_of(http).relay
            assert own is not None and own.sent + other.sent == total
            print(f"two workers: the fleet's sent {own.sent}, the second {other.sent}")
            for dev in devices:
                dev.close()
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await other.close()
