"""The relay worker (`fleet-relay`, docs/relay.md "Data flow" step 3): claims runs of the
(endpoint, device) queues (fleet/relay/delivery.py `claim_runs`: up to RUN_MAX of a queue's oldest
due deliveries), sends each run's deliveries one after another in order, one run per queue, at most
`max_in_flight` runs per endpoint and FLEET_RELAY_CONCURRENCY in all (per fleet instance).

A run stops at its first failure (recorded at once, with its backoff) and gives back the rest.
Successes are written in batches (`record_successes`): every FLUSH_S, or at FLUSH_MAX waiting,
and when a run ends. A turn (the heads query, the claims) runs when nudged (the ingest after a
batch with deliveries, a run ending, the API), at most every TURN_GAP_S however many nudges came
meanwhile; else when the earliest retry is due and at least every FLEET_RELAY_TICK_S (deliveries
another instance made). It also reloads the route table every FLEET_RELAY_ROUTES_RELOAD_S and
applies the outbox bound (FLEET_RELAY_OUTBOX_MAX) every BOUND_EVERY_S.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fleet.relay import delivery as policy
from fleet.relay import message as relay_message
from fleet.relay import snapshots
from fleet.relay.metrics import RelayStats
from fleet.relay.models import EndpointKind, RelayDelivery, RelayEndpoint, Snapshot
from fleet.relay.mqtt_out import MqttTransport
from fleet.relay.routing import RouteTable
from fleet.relay.transport import Message, Outcome, Transport
from fleet.relay.webhook import WebhookTransport
from fleet.settings import Settings
from fleet.tasks import stop_tasks, turn_to_end

log = logging.getLogger(__name__)

BOUND_EVERY_S = 5.0
SNAPSHOT_POLL_S = 1.0  # a delivery waiting for its snapshot looks again this often
TURN_GAP_S = 0.015  # nudges within this of a turn's start make one more turn, after it
FLUSH_S = 0.005  # a success waits at most this long (plus a flush in progress) to be written
FLUSH_MAX = 200  # ... or until this many wait
HELD_TTL_S = 60.0  # a snapshot known held is not asked about again for this long
HELD_MAX = 10_000  # known-held hashes remembered; at the bound the memory is cleared


@dataclass(eq=False)
class _Run:
    """One claimed run of a queue: `rows[:sent]` are done (recorded or waiting to be), the rest held."""

    endpoint: RelayEndpoint
    queue: tuple[int, str]
    token: str
    rows: list[RelayDelivery]
    lease_until: datetime
    sent: int = 0
    stop: bool = False  # the endpoint is no longer enabled: send no more
    lost: bool = False  # a write failed or the lease was lost: leave the rest to the lease
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:  # the turn's claim token is shared by its runs
        return f"{self.token}-{self.rows[0].id}"


class RelayWorker:
    def __init__(self, settings: Settings, transports: Mapping[EndpointKind, Transport] | None = None) -> None:
        self.settings = settings
        self.routes = RouteTable(settings.relay_routes_reload_s)
        self.transports: dict[EndpointKind, Transport] = dict(
            transports or {EndpointKind.WEBHOOK: WebhookTransport(), EndpointKind.MQTT: MqttTransport()})
        self.concurrency = settings.relay_concurrency
        self.tick_s = settings.relay_tick_s
        self.stats = RelayStats()
        self._wake = asyncio.Event()
        self._runs: dict[str, _Run] = {}  # run key -> run
        self._bounded_at = 0.0  # monotonic
        self._failed = False  # a turn's failure logged with its traceback once
        self._enabled: dict[int, EndpointKind] = {}  # the endpoints enabled at the last turn
        self._forget: dict[int, EndpointKind] = {}  # no longer enabled: close once their runs end
        self._held: dict[str, float] = {}  # snapshot sha256 -> monotonic time it was seen held
        self._done: list[tuple[policy.Success, str]] = []  # successes waiting to be written, with their run
        self._flush_lock = asyncio.Lock()
        self._flush_timer: asyncio.Task[None] | None = None
        self.sent = 0  # attempts made by this process (for tests and metrics)

    def nudge(self) -> None:
        """Run a turn soon (the ingest, after a batch with deliveries committed; the API after a replay)."""
        self._wake.set()

    async def routes_changed(self) -> None:
        """A route or an endpoint changed in this process: reload the table before the next event."""
        await self.routes.reload()

    async def run(self) -> None:
        started = -TURN_GAP_S
        while True:
            gap = TURN_GAP_S - (time.monotonic() - started)
            if gap > 0:  # coalesce: the nudges of a busy moment make one turn
                await asyncio.sleep(gap)
            started = time.monotonic()
            self._wake.clear()  # a nudge from here on makes one more turn
            wait = self.tick_s
            try:
                wait = min(wait, await turn_to_end(self.turn()))
                self._failed = False
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.error("relay: a turn failed; carrying on", exc_info=None if self._failed else err)
                self._failed = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._wake.wait()

    async def turn(self, now: datetime | None = None) -> float:
        """Claim and start the runs that are due; returns the seconds until the earliest head not yet due."""
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
        await self._endpoints_seen(endpoints)
        wait = self.tick_s
        if len(self._runs) >= self.concurrency:
            return wait
        busy_queues = {run.queue for run in self._runs.values()}
        per_endpoint: dict[int, int] = {}
        for endpoint_id, _ in busy_queues:
            per_endpoint[endpoint_id] = per_endpoint.get(endpoint_id, 0) + 1
        heads = await policy.heads(endpoints)
        wanted: list[tuple[policy.Head, RelayEndpoint]] = []
        await self._look_up_held(h.snapshot_sha256 for h in heads if h.snapshot_sha256 and h.next_at <= now)
        for head in heads:
            if len(self._runs) + len(wanted) >= self.concurrency:
                break
            endpoint = endpoints[head.endpoint_id]
            queue = (head.endpoint_id, head.device_id)
            if queue in busy_queues or per_endpoint.get(head.endpoint_id, 0) >= endpoint.max_in_flight:
                continue
            if head.next_at > now:
                wait = min(wait, (head.next_at - now).total_seconds())
                continue
            if head.snapshot_sha256 and not self._known_held(head.snapshot_sha256):
                deadline = head.created_at + timedelta(seconds=endpoint.snapshot_wait_s)
                if now < deadline:  # the image may still be on its way from the Pi
                    wait = min(wait, SNAPSHOT_POLL_S, (deadline - now).total_seconds())
                    continue
            wanted.append((head, endpoint))
            busy_queues.add(queue)
            per_endpoint[head.endpoint_id] = per_endpoint.get(head.endpoint_id, 0) + 1
        token = uuid.uuid4().hex  # one claim for the turn's runs; each run names its own rows
        for (head, endpoint), rows in zip(wanted, await policy.claim_runs(wanted, now, token), strict=True):
            if not rows:
                continue
            run = _Run(endpoint, (head.endpoint_id, head.device_id), token, rows, rows[0].next_at)
            self._runs[run.key] = run
            run.task = asyncio.create_task(self._drive(run), name=f"fleet-relay-run-{rows[0].id}")
        return wait

    async def _endpoints_seen(self, endpoints: Mapping[int, RelayEndpoint]) -> None:
        """Runs of an endpoint no longer enabled stop after their send in flight; its transport's
        connection is closed once none is left (docs/relay.md, "MQTT endpoints")."""
        for endpoint_id, kind in self._enabled.items():
            if endpoint_id not in endpoints:
                self._forget[endpoint_id] = kind
        self._enabled = {e.id: e.kind for e in endpoints.values()}
        for run in self._runs.values():
            if run.endpoint.id not in endpoints:
                run.stop = True
        active = {run.endpoint.id for run in self._runs.values()}
        for endpoint_id, kind in list(self._forget.items()):
            if endpoint_id in endpoints:  # enabled again
                del self._forget[endpoint_id]
            elif endpoint_id not in active:
                del self._forget[endpoint_id]
                await self.transports[kind].forget(endpoint_id)

    def _known_held(self, sha256: str) -> bool:
        seen = self._held.get(sha256)
        return seen is not None and time.monotonic() - seen < HELD_TTL_S

    async def _look_up_held(self, hashes: Iterable[str]) -> None:
        """One query for the hashes not known held (an image not held yet is asked about again)."""
        unknown = {sha for sha in hashes if not self._known_held(sha)}
        if not unknown:
            return
        held = await Snapshot.filter(sha256__in=list(unknown)).values_list("sha256", flat=True)
        if len(self._held) + len(held) > HELD_MAX:
            self._held.clear()
        seen = time.monotonic()
        for sha in held:
            self._held[str(sha)] = seen

    async def _drive(self, run: _Run) -> None:
        cancelled = False
        try:
            await self._send_run(run)
            await self._end_run(run)
        except asyncio.CancelledError:
            cancelled = True  # close() writes and gives back what the run holds
            raise
        except Exception as err:
            log.error("relay: a run of %s failed (%s: %.200s); what it holds goes out again after its lease",
                      run.endpoint.name, type(err).__name__, err)
        finally:
            if not cancelled:
                self._runs.pop(run.key, None)
                self.nudge()  # the queue's next run, or a free slot for another queue

    async def _send_run(self, run: _Run) -> None:
        endpoint = run.endpoint
        await self._look_up_held(row.snapshot_sha256 for row in run.rows if row.snapshot_sha256)
        for index, row in enumerate(run.rows):
            if run.stop or run.lost:
                return
            now = datetime.now(UTC)
            sha = row.snapshot_sha256
            available = bool(sha) and self._known_held(sha or "")
            if index and sha and not available and now < row.created_at + timedelta(seconds=endpoint.snapshot_wait_s):
                return  # it heads the queue now; the turn waits for its image
            if (run.lease_until - now).total_seconds() < endpoint.timeout_s + policy.LEASE_MARGIN_S / 2:
                lease = now + timedelta(seconds=policy.lease_s(endpoint))
                left = [r.id for r in run.rows[index:]]
                if await policy.renew(left, run.token, lease) < len(left):
                    log.warning("relay: a run of %s lost its claim (its lease ran out); stopped", endpoint.name)
                    run.lost = True
                    return
                run.lease_until = lease
            outcome = await self._send(endpoint, row, available, now)
            answered = datetime.now(UTC)
            self.sent += 1
            run.sent = index + 1
            self.stats.attempt(endpoint.name, outcome, _received_at(row), answered)
            if outcome.ok:
                self._add_success(policy.Success(row.id, endpoint.id, outcome.status, answered), run.key)
                continue
            await self._flush()  # the successes before it first: the endpoint's counters in order
            reason = await policy.record(endpoint, row, outcome, answered, attempted_at=now)
            if reason:
                log.warning("relay: endpoint %s disabled: %s", endpoint.name, reason)
            return

    async def _end_run(self, run: _Run) -> None:
        """Write the run's successes, give back what it did not send."""
        await self._flush()
        if run.lost:
            return
        rest = [row.id for row in run.rows[run.sent:]]
        if rest:
            await policy.release(rest, run.token, datetime.now(UTC))

    def _add_success(self, success: policy.Success, run_key: str) -> None:
        self._done.append((success, run_key))
        if len(self._done) >= FLUSH_MAX or self._flush_timer is None or self._flush_timer.done():
            self._flush_timer = asyncio.create_task(self._flush_soon(0.0 if len(self._done) >= FLUSH_MAX
                                                                     else FLUSH_S), name="fleet-relay-flush")

    async def _flush_soon(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._flush()

    async def _flush(self) -> None:
        async with self._flush_lock:
            batch, self._done = self._done, []
            if not batch:
                return
            try:
                await policy.record_successes([success for success, _ in batch])
            except Exception as err:  # they go out again after their leases: at least once
                log.error("relay: %d deliveries sent could not be recorded (%s: %.200s); they are sent again "
                          "after their lease", len(batch), type(err).__name__, err)
                for _, run_key in batch:
                    if run_key in self._runs:
                        self._runs[run_key].lost = True

    async def _send(self, endpoint: RelayEndpoint, delivery: RelayDelivery, available: bool,
                    now: datetime) -> Outcome:
        sha = delivery.snapshot_sha256
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
        """Stop sending: the runs are cancelled, their successes written and what they held made due
        again at once (not delivered: the next start sends it, with the same message id)."""
        runs = list(self._runs.values())
        tasks = [run.task for run in runs if run.task is not None]
        await stop_tasks(tasks)
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            with contextlib.suppress(BaseException):
                await self._flush_timer
        try:
            await self._flush()
            now = datetime.now(UTC)
            for run in runs:
                if not run.lost:
                    await policy.release([row.id for row in run.rows[run.sent:]], run.token, now)
        except Exception as err:  # the database already gone: the leases run out instead
            log.warning("relay: could not release %d runs in flight (%s)", len(runs), err)
        self._runs.clear()
        for transport in self.transports.values():
            await transport.close()


def _received_at(delivery: RelayDelivery) -> datetime | None:
    """When the fleet received the event (the stored message's `received_at`), for the latency."""
    try:
        return datetime.fromisoformat(delivery.payload["data"]["event"]["received_at"])
    except (KeyError, TypeError, ValueError):
        return None
