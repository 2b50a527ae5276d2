"""The outbox's operations for the API and the relay worker (docs/relay.md, "Endpoints and
delivery"): replay dead letters, enable an endpoint, rotate its secret. Small and pure over the
tables; whoever calls them nudges the relay worker (`Runtime.relay.nudge()`) afterwards."""

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from fleet.models import Device, EventRecord
from fleet.ops import webhook_sign
from fleet.relay.message import message_id, payload, severity
from fleet.relay.models import DeliveryStatus, RelayDelivery, RelayEndpoint
from fleet.relay.routing import RouteTable, Subject, tags_of


def event_payload(event: EventRecord, device: Device, made_at: datetime) -> dict[str, Any]:
    """The relayed message of a stored event and its device (docs/relay.md, "Events, as relayed"),
    as the outbox stores it; the live feed sends its `data` (fleet/relay/feed.py): one builder."""
    return payload(device={"id": device.id, "kind": device.kind, "name": device.name, "ward": device.ward,
                           "site": device.site, "tags": sorted(tags_of(device.tags)), "lat": device.latitude,
                           "lon": device.longitude},
                   event={"id": event.event_id, "type": event.type, "phase": event.phase,
                          "category": event.category, "at": event.at, "received_at": event.received_at,
                          "data": event.data},
                   stream=(event.epoch, event.ses, event.seq), snapshot=event.snapshot, made_at=made_at)


async def enqueue(conn: BaseDBAsyncClient, events: Sequence[EventRecord], devices: Mapping[str, Device],
                  now: datetime, routes: RouteTable) -> int:
    """In the ingest's transaction (`conn`): one pending delivery per (event, endpoint) its enabled
    routes match, made now and due now. A message already queued for an endpoint (the same event
    enqueued again) is left as it is. Returns how many rows were offered; no route: no query."""
    if not routes.rules or not events:
        return 0
    rows: list[RelayDelivery] = []
    for event in events:
        device = devices[event.device_id]
        kind = device.kind or ""
        tags = tags_of(device.tags)
        level = severity(event.type, event.phase, event.data)
        targets = routes.endpoints_for(Subject(type=event.type, phase=event.phase, category=event.category,
                                               severity=level, device=device.id, ward=device.ward, kind=kind,
                                               tags=tags))
        if not targets:
            continue
        stored = event_payload(event, device, now)
        snapshot = stored["data"]["snapshot"]
        mid = message_id(device.id, event.epoch, event.ses, event.seq)
        for endpoint_id in sorted(targets):
            rows.append(RelayDelivery(endpoint_id=endpoint_id, device_id=device.id, message_id=mid, payload=stored,
                                      snapshot_sha256=snapshot["sha256"] if snapshot else None,
                                      next_at=now, created_at=now))
    if rows:
        await RelayDelivery.bulk_create(rows, using_db=conn, ignore_conflicts=True)
    return len(rows)


REPLAYED = {"status": DeliveryStatus.PENDING, "attempts": 0, "last_status": None, "last_error": None,
            "done_at": None}


async def replay(delivery_ids: Iterable[int], now: datetime | None = None) -> int:
    """Dead deliveries among `delivery_ids` become pending again, attempts reset, due now, with
    their original message id. Returns how many (a delivered or pending one is left as it is)."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    return await RelayDelivery.filter(id__in=ids, status=DeliveryStatus.DEAD).update(
        **REPLAYED, next_at=now or datetime.now(UTC))


async def replay_endpoint(endpoint_id: int, now: datetime | None = None) -> int:
    """Every dead delivery of the endpoint becomes pending again (as `replay`); how many."""
    return await RelayDelivery.filter(endpoint_id=endpoint_id, status=DeliveryStatus.DEAD).update(
        **REPLAYED, next_at=now or datetime.now(UTC))


async def enable(endpoint_id: int) -> bool:
    """Enable the endpoint and reset its failure counts (its pending deliveries go out again).
    False if there is no such endpoint."""
    return bool(await RelayEndpoint.filter(id=endpoint_id).update(
        enabled=True, disabled_reason=None, disabled_at=None, consecutive_failures=0, consecutive_gone=0,
        failing_since=None))


async def rotate_secret(endpoint: RelayEndpoint, now: datetime, previous_valid_s: float) -> str:
    """A new secret for the endpoint, the current one kept valid for `previous_valid_s` (messages
    carry both signatures until then; 0: the old one stops at once). Saves it; returns the new
    secret (shown once to the caller, never logged)."""
    fresh = webhook_sign.new_secret()
    endpoint.previous_secret = endpoint.secret if previous_valid_s > 0 else None
    endpoint.previous_until = now + timedelta(seconds=previous_valid_s) if previous_valid_s > 0 else None
    endpoint.secret = fresh
    await endpoint.save(update_fields=["secret", "previous_secret", "previous_until", "updated_at"])
    return fresh
