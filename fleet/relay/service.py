"""The relay worker (`fleet-relay`, docs/relay.md "Data flow" step 3): sends the head of every
(endpoint, device) queue, one in flight per queue, at most `max_in_flight` per endpoint and
FLEET_RELAY_CONCURRENCY in all (per fleet instance), and applies each outcome
(fleet/relay/delivery.py).

A turn runs when the ingest nudges (deliveries just committed), when a send ends, when the
earliest retry is due, and at least every FLEET_RELAY_TICK_S (deliveries another instance made).
It also reloads the route table every FLEET_RELAY_ROUTES_RELOAD_S and applies the outbox bound
(FLEET_RELAY_OUTBOX_MAX) every BOUND_EVERY_S.
"""

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from fleet.relay import delivery as policy
from fleet.relay import message as relay_message
from fleet.relay import snapshots
from fleet.relay.models import EndpointKind, RelayDelivery, RelayEndpoint
from fleet.relay.mqtt_out import MqttTransport
from fleet.relay.routing import RouteTable
from fleet.relay.transport import Message, Outcome, Transport
from fleet.relay.webhook import WebhookTransport
from fleet.settings import Settings

log = logging.getLogger(__name__)

BOUND_EVERY_S = 5.0
SNAPSHOT_POLL_S = 1.0  # a delivery waiting for its snapshot looks again this often


class RelayWorker:
    def __init__(self, settings: Settings, transports: Mapping[EndpointKind, Transport] | None = None) -> None:
        self.settings = settings
        self.routes = RouteTable(settings.relay_routes_reload_s)
        self.transports: dict[EndpointKind, Transport] = dict(
            transports or {EndpointKind.WEBHOOK: WebhookTransport(), EndpointKind.MQTT: MqttTransport()})
        self.concurrency = settings.relay_concurrency
        self.tick_s = settings.relay_tick_s
        self._wake = asyncio.Event()
        self._sending: dict[int, tuple[int, str]] = {}  # delivery id -> its queue (endpoint, device)
        self._tasks: set[asyncio.Task[None]] = set()
        self._bounded_at = 0.0  # monotonic
        self._failed = False  # a turn's failure logged with its traceback once
        self.sent = 0  # attempts made by this process (for tests and metrics)

    def nudge(self) -> None:
        """Run a turn now (the ingest, after a batch with deliveries committed; the API after a replay)."""
        self._wake.set()

    async def routes_changed(self) -> None:
        """A route or an endpoint changed in this process: reload the table before the next event."""
        await self.routes.reload()

    async def run(self) -> None:
        while True:
            wait = self.tick_s
            try:
                wait = min(wait, await self.turn())
                self._failed = False
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.error("relay: a turn failed; carrying on", exc_info=None if self._failed else err)
                self._failed = True
            try:
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.0))
            except TimeoutError:
                pass
            self._wake.clear()

    async def turn(self, now: datetime | None = None) -> float:
        """Claim and start what is due; returns the seconds until the earliest head not yet due."""
        now = now or datetime.now(UTC)
        if self.routes.stale():
            await self.routes.reload()
        if time.monotonic() - self._bounded_at >= BOUND_EVERY_S:
            self._bounded_at = time.monotonic()
            dropped = await policy.bound_outbox(self.settings.relay_outbox_max, now)
            if dropped:
                log.warning("relay: outbox over %d pending for an endpoint: %d oldest dead-lettered (outbox full)",
                            self.settings.relay_outbox_max, dropped)
        endpoints = {e.id: e for e in await RelayEndpoint.filter(enabled=True) if e.kind in self.transports}
        wait = self.tick_s
        if len(self._sending) >= self.concurrency:
            return wait
        busy_queues = set(self._sending.values())
        per_endpoint: dict[int, int] = {}
        for endpoint_id, _ in busy_queues:
            per_endpoint[endpoint_id] = per_endpoint.get(endpoint_id, 0) + 1
        for head in await policy.heads(endpoints):
            if len(self._sending) >= self.concurrency:
                break
            endpoint = endpoints[head.endpoint_id]
            queue = (head.endpoint_id, head.device_id)
            if queue in busy_queues or per_endpoint.get(head.endpoint_id, 0) >= endpoint.max_in_flight:
                continue
            if head.next_at > now:
                wait = min(wait, (head.next_at - now).total_seconds())
                continue
            if head.snapshot_sha256 and not await snapshots.held(head.snapshot_sha256):
                deadline = head.created_at + timedelta(seconds=endpoint.snapshot_wait_s)
                if now < deadline:  # the image may still be on its way from the Pi
                    wait = min(wait, SNAPSHOT_POLL_S, (deadline - now).total_seconds())
                    continue
            taken = await policy.claim(head, endpoint, now)
            if taken is None:
                continue
            busy_queues.add(queue)
            per_endpoint[head.endpoint_id] = per_endpoint.get(head.endpoint_id, 0) + 1
            self._sending[taken.id] = queue
            task = asyncio.create_task(self._attempt(endpoint, taken), name=f"fleet-relay-send-{taken.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return wait

    async def _attempt(self, endpoint: RelayEndpoint, delivery: RelayDelivery) -> None:
        try:
            outcome = await self._send(endpoint, delivery)
            now = datetime.now(UTC)
            self.sent += 1
            reason = await policy.record(endpoint, delivery, outcome, now)
            if reason:
                log.warning("relay: endpoint %s disabled: %s", endpoint.name, reason)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.error("relay: delivery %d to %s failed to be recorded (%s: %.200s); it is sent again after its lease",
                      delivery.id, endpoint.name, type(err).__name__, err)
        finally:
            self._sending.pop(delivery.id, None)
            self.nudge()  # the queue's next delivery, or a free slot for another queue

    async def _send(self, endpoint: RelayEndpoint, delivery: RelayDelivery) -> Outcome:
        now = datetime.now(UTC)
        sha = delivery.snapshot_sha256
        available = bool(sha) and await snapshots.held(sha or "")
        url = snapshots.snapshot_url(self.settings, endpoint.name, sha, now) if sha else None
        body = relay_message.body(delivery.payload, available=available, url=url)
        headers = relay_message.signed_headers(delivery.message_id, int(now.timestamp()), body,
                                               secret=endpoint.secret, previous_secret=endpoint.previous_secret,
                                               previous_until=endpoint.previous_until, now=now)
        event = delivery.payload["data"]["event"]
        device = delivery.payload["data"]["device"]
        message = Message(body=body, headers=headers, device=delivery.device_id, type=event["type"],
                          phase=event["phase"], category=event["category"], ward=device.get("ward") or "")
        return await self.transports[endpoint.kind].send(endpoint, message)

    async def close(self) -> None:
        """Stop sending: the sends in flight are cancelled and their deliveries made due again at once
        (they were not delivered: the next start sends them, with the same message id)."""
        sending = list(self._sending)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if sending:
            try:
                await RelayDelivery.filter(id__in=sending, status="pending").update(next_at=datetime.now(UTC))
            except Exception as err:  # the database already gone: the lease runs out instead
                log.warning("relay: could not release %d deliveries in flight (%s)", len(sending), err)
        for transport in self.transports.values():
            await transport.close()
