"""Relay delivery (docs/relay.md, "Data flow", "Events, as relayed", "Endpoints and delivery"):
events put through the real ingest (Mosquitto, an enrolled device) reach a real HTTP receiver that
verifies every signature with the `standardwebhooks` package, in order per device; retries,
`Retry-After`, 410, the failure budget, dead letters and replay, secret rotation, the outbox bound."""

import statistics
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.models import Device
from fleet.relay import outbox
from fleet.relay.delivery import backoff_s, bound_outbox
from fleet.relay.message import message_id
from fleet.relay.models import DeliveryStatus, RelayDelivery, RelayEndpoint, Snapshot
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


async def device(http: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str, ward: str = "ben-nghe",
                 tags: list[str] | None = None) -> ScriptedDevice:
    await enroll(http, device_id, "pi", ward)
    if tags:
        await Device.filter(id=device_id).update(tags=tags)
    return ScriptedDevice(mosquitto.port, device_id, ses=1764520000, will=False)


async def calls(receiver: Receiver, count: int, what: str = "the receiver's calls") -> list[Any]:
    async def enough() -> list[Any] | None:
        return list(receiver.calls) if len(receiver.calls) >= count else None
    return await async_wait_for(enough, what=what, timeout=30)


async def delivery_of(endpoint: RelayEndpoint, **where: Any) -> RelayDelivery:
    async def found() -> RelayDelivery | None:
        return await RelayDelivery.filter(endpoint_id=endpoint.id, **where).first()
    return await async_wait_for(found, what=f"a delivery {where}")


async def test_events_reach_the_receiver_signed_and_in_order_per_device(
        database_url: str, mosquitto: Mosquitto, receiver: Receiver, device_id: str, tmp_path: Path) -> None:
    settings = fleet_settings(database_url, mosquitto.url, snapshot_dir=tmp_path / "snapshots")
    async with running_fleet(settings) as http:
        endpoint = await endpoint_for(http, receiver, route={"categories": ["security"], "tags": ["junction"]})
        other = await endpoint_for(http, receiver, route={"min_severity": "major"})
        a = await device(http, mosquitto, device_id, tags=["junction"])
        b = await device(http, mosquitto, f"{device_id}-b", ward="ben-thanh", tags=["junction", "market"])
        quiet = await device(http, mosquitto, f"{device_id}-q")  # no tag: no route of the first endpoint
        sent: dict[str, list[int]] = {a.device_id: [], b.device_id: []}
        for i in range(15):
            for dev in (a, b):
                sent[dev.device_id].append(event(dev, data={"camera": "cam1", "i": i}))
        event(quiet)
        event(a, type_="motion", category="traffic_safety")  # not security: no route matches
        lamp = event(quiet, type_="lamp_failure", category="other")  # major: the second endpoint
        got = await calls(receiver, 31)
        assert len(got) == 31 and all(c.verified_with for c in got)
        assert {c.headers["user-agent"].split("/")[0] for c in got} == {"ioc-fleet-relay"}
        to_first = [c for c in got if c.verified_with == [endpoint.secret]]
        to_other = [c for c in got if c.verified_with == [other.secret]]
        assert len(to_first) == 30 and len(to_other) == 1
        for dev in (a, b):  # in the order stored, per device
            seqs = [c.json()["data"]["stream"]["seq"] for c in to_first
                    if c.json()["data"]["device"]["id"] == dev.device_id]
            assert seqs == sent[dev.device_id]
        first = to_first[0].json()
        dev_id = first["data"]["device"]["id"]
        assert first["type"] == "device.event" and first["timestamp"].endswith("Z")
        assert first["data"]["device"]["kind"] == "pi" and "junction" in first["data"]["device"]["tags"]
        assert first["data"]["event"]["severity"] == "info" and first["data"]["event"]["category"] == "security"
        assert first["data"]["snapshot"] is None
        stream = first["data"]["stream"]
        assert to_first[0].id == message_id(dev_id, stream["epoch"], stream["ses"], stream["seq"])
        lamp_call = to_other[0].json()
        assert lamp_call["data"]["event"]["severity"] == "major" and lamp_call["data"]["stream"]["seq"] == lamp
        assert to_other[0].id == message_id(quiet.device_id, 0, quiet.ses, lamp)
        async def all_delivered() -> list[Any] | None:  # recorded just after the receiver answered
            rows = await RelayDelivery.filter(endpoint_id=endpoint.id).values_list("status", "attempts")
            return rows if all(status == DeliveryStatus.DELIVERED for status, _ in rows) else None
        rows = await async_wait_for(all_delivered, what="every delivery recorded")
        assert len(rows) == 30 and all(attempts == 1 for _, attempts in rows)
        assert (await RelayEndpoint.get(id=endpoint.id)).last_success_at is not None
        for dev in (a, b, quiet):
            dev.close()


async def test_latency_device_to_receiver(sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto,
                                          receiver: Receiver, device_id: str) -> None:
    """Nothing failing on loopback, one event at a time: the relay sends right after the ingest's
    commit (its nudge), not at the next tick. Printed, and the median below the 1 s tick."""
    await endpoint_for(sqlite_fleet, receiver)
    dev = await device(sqlite_fleet, mosquitto, device_id)
    latencies = []
    for i in range(40):
        started = time.monotonic()
        event(dev, data={"i": i})
        got = await calls(receiver, i + 1)
        latencies.append(got[-1].at - started)
    latencies.sort()
    print(f"relay latency device->receiver: median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {latencies[-1] * 1000:.0f} ms over {len(latencies)}")
    assert statistics.median(latencies) < runtime_of(sqlite_fleet).settings.relay_tick_s
    dev.close()


def test_backoff_formula() -> None:
    endpoint = RelayEndpoint(retry_base_s=5.0, retry_max_s=3600.0)
    assert [backoff_s(endpoint, n, 1.0) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff_s(endpoint, 3, 0.5) == 10.0
    assert backoff_s(endpoint, 15, 1.0) == 3600.0 and backoff_s(endpoint, 200, 0.5) == 1800.0


async def test_retries_follow_the_backoff_then_deliver(sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto,
                                                       receiver: Receiver, device_id: str) -> None:
    base = 0.2
    endpoint = await endpoint_for(sqlite_fleet, receiver, retry_base_s=base, retry_max_s=1.0)
    receiver.answer(500, body=b"busy " * 2000, times=4)
    dev = await device(sqlite_fleet, mosquitto, device_id)
    event(dev)
    event(dev)  # held behind the first until it is delivered
    got = await calls(receiver, 6)
    assert len({c.id for c in got[:5]}) == 1 and got[5].id != got[0].id  # one message retried, then the next
    gaps = [later.at - earlier.at for earlier, later in pairwise(got[:5])]
    for n, gap in enumerate(gaps, start=1):  # at least the backoff's lower bound (factor 0.5)
        assert gap >= min(1.0, base * 2 ** (n - 1)) * 0.5
    assert gaps[2] > gaps[0]  # it grows
    assert len({c.headers["webhook-timestamp"] for c in got[:5]}) >= 1
    assert len({c.body for c in got[:5]}) == 1  # the same body on every retry (no snapshot)
    first = await delivery_of(endpoint, message_id=got[0].id)
    assert first.status == DeliveryStatus.DELIVERED and first.attempts == 5
    ep = await RelayEndpoint.get(id=endpoint.id)
    assert ep.consecutive_failures == 0 and ep.failing_since is None and ep.enabled
    dev.close()


async def test_retry_after_is_honoured(sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto,
                                       receiver: Receiver, device_id: str) -> None:
    endpoint = await endpoint_for(sqlite_fleet, receiver, retry_base_s=0.1)
    receiver.answer(503, {"Retry-After": "120"})
    dev = await device(sqlite_fleet, mosquitto, device_id)
    event(dev)
    await calls(receiver, 1)

    async def retried() -> RelayDelivery | None:
        row = await RelayDelivery.filter(endpoint_id=endpoint.id).first()
        return row if row is not None and row.last_status == 503 else None
    row = await async_wait_for(retried, what="the 503 recorded")
    assert row.last_attempt_at is not None
    assert row.next_at - row.last_attempt_at >= timedelta(seconds=120)
    assert row.status == DeliveryStatus.PENDING and "HTTP 503" in (row.last_error or "")
    dev.close()


def test_retry_after_as_seconds_or_an_http_date() -> None:
    from fleet.relay.webhook import retry_after_s
    moment = now().replace(microsecond=0)
    assert retry_after_s("30", moment) == 30.0
    date = (moment + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after_s(date, moment) == 90.0
    assert retry_after_s("soon", moment) is None and retry_after_s(None, moment) is None


async def test_410_twice_disables_and_enable_resumes(sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto,
                                                     receiver: Receiver, device_id: str) -> None:
    endpoint = await endpoint_for(sqlite_fleet, receiver, retry_base_s=0.05)
    receiver.answer(410, times=2)
    dev = await device(sqlite_fleet, mosquitto, device_id)
    event(dev)

    async def disabled() -> RelayEndpoint | None:
        ep = await RelayEndpoint.get(id=endpoint.id)
        return ep if not ep.enabled else None
    ep = await async_wait_for(disabled, what="the endpoint disabled")
    assert "410" in (ep.disabled_reason or "") and ep.consecutive_gone == 2 and ep.disabled_at is not None
    event(dev)  # still queued while disabled (nothing sent)
    row = await delivery_of(endpoint, status=DeliveryStatus.PENDING)
    assert row.attempts == 2 and len(receiver.calls) == 2
    assert await outbox.enable(endpoint.id)
    relay = runtime_of(sqlite_fleet).relay
    assert relay is not None
    relay.nudge()
    got = await calls(receiver, 4)
    assert got[2].id == got[0].id and got[3].id != got[0].id
    ep = await RelayEndpoint.get(id=endpoint.id)
    assert ep.enabled and ep.consecutive_gone == 0 and ep.disabled_reason is None
    dev.close()


async def test_the_failure_budget_disables(sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto,
                                           receiver: Receiver, device_id: str) -> None:
    endpoint = await endpoint_for(sqlite_fleet, receiver, retry_base_s=0.05, retry_max_s=0.1,
                                  failure_budget=4, failure_window_s=0.0)
    receiver.answer(500, times=100)
    dev = await device(sqlite_fleet, mosquitto, device_id)
    event(dev)

    async def disabled() -> RelayEndpoint | None:
        ep = await RelayEndpoint.get(id=endpoint.id)
        return ep if not ep.enabled else None
    ep = await async_wait_for(disabled, what="the endpoint disabled")
    assert ep.consecutive_failures == 4 and "4 failures in a row" in (ep.disabled_reason or "")
    assert len(receiver.calls) == 4
    dev.close()


async def test_dead_after_max_attempts_and_replay_sends_the_same_id(
        sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto, receiver: Receiver, device_id: str) -> None:
    endpoint = await endpoint_for(sqlite_fleet, receiver, retry_base_s=0.05, max_attempts=3)
    receiver.answer(500, body=b"database down", times=3)
    dev = await device(sqlite_fleet, mosquitto, device_id)
    event(dev)
    event(dev)  # goes once the first is dead: a dead letter lets the queue move on
    got = await calls(receiver, 4)
    dead = await delivery_of(endpoint, status=DeliveryStatus.DEAD)
    assert dead.attempts == 3 and dead.done_at is not None
    assert dead.last_error == "HTTP 500 from 127.0.0.1: database down"
    assert got[3].id != dead.message_id
    assert await outbox.replay([dead.id]) == 1
    assert await outbox.replay([dead.id]) == 0  # no longer dead
    relay = runtime_of(sqlite_fleet).relay
    assert relay is not None
    relay.nudge()
    got = await calls(receiver, 5)
    assert got[4].id == dead.message_id and got[4].verified_with
    replayed = await RelayDelivery.get(id=dead.id)
    assert replayed.status == DeliveryStatus.DELIVERED and replayed.attempts == 1
    dev.close()


async def test_rotation_two_secrets_then_the_new_one(sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto,
                                                     receiver: Receiver, device_id: str) -> None:
    endpoint = await endpoint_for(sqlite_fleet, receiver)
    old = endpoint.secret
    dev = await device(sqlite_fleet, mosquitto, device_id)
    event(dev)
    assert (await calls(receiver, 1))[0].verified_with == [old]
    new = await outbox.rotate_secret(endpoint, now(), previous_valid_s=3600)
    assert new != old and new.startswith("whsec_")
    receiver.secrets.append(new)
    event(dev)
    during = (await calls(receiver, 2))[1]
    assert sorted(during.verified_with) == sorted([old, new])  # a receiver holding either verifies
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    await RelayEndpoint.filter(id=endpoint.id).update(previous_until=now() - timedelta(seconds=1))
    event(dev)
    after = (await calls(receiver, 3))[2]
    assert after.verified_with == [new] and len(after.headers["webhook-signature"].split(" ")) == 1
    dev.close()


async def test_snapshot_available_with_a_signed_url_or_not(
        sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto, receiver: Receiver, device_id: str) -> None:
    endpoint = await endpoint_for(sqlite_fleet, receiver, snapshot_wait_s=0.0)
    held, missing = "ab" * 32, "cd" * 32
    await Snapshot.create(sha256=held, bytes=1000, device_id=device_id, received_at=now())
    dev = await device(sqlite_fleet, mosquitto, device_id)
    event(dev, snapshot={"ref": "a.jpg", "sha256": held, "bytes": 1000, "type": "image/jpeg"})
    event(dev, snapshot={"ref": "b.jpg", "sha256": missing, "bytes": 2000, "type": "image/jpeg"})
    got = await calls(receiver, 2)
    first, second = (c.json()["data"]["snapshot"] for c in got)
    assert first["sha256"] == held and first["available"] is True and first["bytes"] == 1000
    assert f"/api/snapshots/{held}?token=" in first["url"]
    assert second["available"] is False and second["sha256"] == missing
    row = await delivery_of(endpoint, snapshot_sha256=held)
    assert "url" not in row.payload["data"]["snapshot"]  # made afresh at each attempt
    dev.close()


async def test_the_outbox_bound_dead_letters_the_oldest(
        sqlite_fleet: httpx.AsyncClient, mosquitto: Mosquitto, receiver: Receiver, device_id: str) -> None:
    endpoint = await endpoint_for(sqlite_fleet, receiver, enabled=False)  # nothing sent: all stay pending
    dev = await device(sqlite_fleet, mosquitto, device_id)
    seqs = [event(dev) for _ in range(5)]

    async def queued() -> bool:
        return await RelayDelivery.filter(endpoint_id=endpoint.id).count() == 5
    await async_wait_for(queued, what="5 deliveries queued")
    assert await bound_outbox(3, now()) == 2
    rows = await RelayDelivery.filter(endpoint_id=endpoint.id).order_by("id")
    assert [r.status for r in rows] == [DeliveryStatus.DEAD] * 2 + [DeliveryStatus.PENDING] * 3
    assert rows[0].last_error == "outbox full" and rows[0].payload["data"]["stream"]["seq"] == seqs[0]
    assert await bound_outbox(3, now()) == 0 and not receiver.calls
    dev.close()


async def test_delivered_and_dead_rows_go_with_the_events(sqlite_fleet: httpx.AsyncClient,
                                                          receiver: Receiver) -> None:
    from fleet.ops.retention import Retention
    settings = runtime_of(sqlite_fleet).settings
    endpoint = await endpoint_for(sqlite_fleet, receiver, enabled=False)
    old = now() - timedelta(days=settings.retention_events_days + 1)
    rows = [RelayDelivery(endpoint_id=endpoint.id, device_id="d", message_id=f"msg_{n}", payload={},
                          status=status, next_at=old, created_at=old, done_at=done)
            for n, (status, done) in enumerate([(DeliveryStatus.DELIVERED, old), (DeliveryStatus.DEAD, old),
                                                (DeliveryStatus.DELIVERED, now()), (DeliveryStatus.PENDING, None)])]
    await RelayDelivery.bulk_create(rows)
    report = await Retention(settings).run(now())
    assert report.deleted["relay_delivery"] == 2
    left = await RelayDelivery.filter(endpoint_id=endpoint.id).order_by("id").values_list("message_id", flat=True)
    assert left == ["msg_2", "msg_3"]
