"""The delivery policy (docs/relay.md, "Retries, order, and the bounds"): which deliveries are the
heads of their (endpoint, device) queues, claiming a run of a queue, what an attempt's outcome does
to the delivery and to its endpoint, and the outbox's bound. The loop that runs them is
fleet/relay/service.py.

Claims go through the database, so several fleet instances share one outbox: a run is the due
prefix of a queue's oldest pending deliveries (at most RUN_MAX), taken by writing a claim token and
moving their `next_at` a lease ahead (`timeout_s` + LEASE_MARGIN_S) conditionally on their being
pending and due. Only the queue's head decides whether the queue can be claimed, so while its lease
runs (renewed as the run goes on) nobody else sends from the queue. A process killed mid-run leaves
the run's deliveries pending and they are sent again, with the same message ids, once the lease is
over. An attempt is counted when its outcome is recorded: one cut by a crash is not counted.
"""

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import takewhile
from typing import cast

from tortoise.expressions import F, Q
from tortoise.functions import Count, Min

from fleet.relay.models import DeliveryStatus, RelayDelivery, RelayEndpoint
from fleet.relay.transport import Outcome

LEASE_MARGIN_S = 5.0  # a claimed run is not sent by anyone else for timeout_s + this (renewed as it goes)
RUN_MAX = 50  # deliveries of one queue taken by one claim, sent one after another
ERROR_MAX = 300
OUTBOX_FULL = "outbox full"


@dataclass(frozen=True, slots=True)
class Head:
    """The oldest pending delivery of one (endpoint, device) queue."""

    id: int
    endpoint_id: int
    device_id: str
    attempts: int
    next_at: datetime
    created_at: datetime
    snapshot_sha256: str | None


def backoff_s(endpoint: RelayEndpoint, failed_attempts: int, factor: float) -> float:
    """`retry_base_s` × 2ⁿ⁻¹ after the n-th failed attempt, at most `retry_max_s`, times `factor`
    (random in [0.5, 1.0])."""
    exponent = min(max(failed_attempts - 1, 0), 62)
    return min(endpoint.retry_max_s, endpoint.retry_base_s * 2.0 ** exponent) * factor


def retry_delay_s(endpoint: RelayEndpoint, failed_attempts: int, outcome: Outcome,
                  factor: float | None = None) -> float:
    """The wait before the next attempt: the backoff, or the receiver's `Retry-After` when longer
    (at most `retry_max_s`)."""
    delay = backoff_s(endpoint, failed_attempts, random.uniform(0.5, 1.0) if factor is None else factor)
    if outcome.retry_after_s is not None:
        delay = max(delay, min(outcome.retry_after_s, endpoint.retry_max_s))
    return delay


async def heads(endpoint_ids: Iterable[int]) -> list[Head]:
    """The head of every (endpoint, device) queue with a pending delivery, earliest due first."""
    ids = list(endpoint_ids)
    if not ids:
        return []
    firsts = await RelayDelivery.filter(status=DeliveryStatus.PENDING, endpoint_id__in=ids) \
        .annotate(first=Min("id")).group_by("endpoint_id", "device_id").values_list("first", flat=True)
    if not firsts:
        return []
    rows = await RelayDelivery.filter(id__in=list(firsts)).order_by("next_at", "id").values_list(
        "id", "endpoint_id", "device_id", "attempts", "next_at", "created_at", "snapshot_sha256")
    return [Head(*row) for row in rows]


def lease_s(endpoint: RelayEndpoint) -> float:
    """How long a claim keeps others off a queue: one attempt's bound and a margin."""
    return endpoint.timeout_s + LEASE_MARGIN_S


async def claim_run(head: Head, endpoint: RelayEndpoint, now: datetime, token: str,
                    limit: int = RUN_MAX) -> list[RelayDelivery]:
    """Take the head's queue for one run (`claim_runs` for one queue)."""
    return (await claim_runs([(head, endpoint)], now, token, limit))[0]


async def claim_runs(wanted: Sequence[tuple[Head, RelayEndpoint]], now: datetime, token: str,
                     limit: int = RUN_MAX) -> list[list[RelayDelivery]]:
    """Take the heads' queues, one run each: a queue's oldest pending deliveries (at most `limit`)
    as long as they are due, in id order, starting with its head; their `claim` set to `token` and
    their `next_at` to their endpoint's lease. A run is [] when its queue changed, another instance
    holds it, or it fell outside the one read (at most `limit` rows per queue asked, oldest first).
    One SELECT and one UPDATE per endpoint for all of them; a third and a release only when a
    concurrent claim took part of the rows."""
    if not wanted:
        return []
    devices: dict[int, set[str]] = {}
    for head, _ in wanted:
        devices.setdefault(head.endpoint_id, set()).add(head.device_id)
    where = Q(*(Q(endpoint_id=endpoint_id, device_id__in=sorted(ids)) for endpoint_id, ids in devices.items()),
              join_type="OR")
    rows = await RelayDelivery.filter(where, status=DeliveryStatus.PENDING).order_by("id").limit(limit * len(wanted))
    queues: dict[tuple[int, str], list[RelayDelivery]] = {}
    for row in rows:
        queues.setdefault((row.endpoint_id, row.device_id), []).append(row)
    runs: list[list[RelayDelivery]] = []
    for head, _ in wanted:
        due = list(takewhile(lambda row: row.next_at <= now, queues.get((head.endpoint_id, head.device_id), [])))
        runs.append(due[:limit] if due and due[0].id == head.id else [])
    leases = {endpoint.id: now + timedelta(seconds=lease_s(endpoint)) for _, endpoint in wanted}
    taken = 0
    for endpoint_id, lease in leases.items():
        ids = [row.id for run in runs for row in run if row.endpoint_id == endpoint_id]
        if ids:
            taken += await RelayDelivery.filter(id__in=ids, status=DeliveryStatus.PENDING, next_at__lte=now).update(
                claim=token, next_at=lease)
    if taken != sum(len(run) for run in runs):  # raced: keep each prefix we hold (the order), give back the rest
        ids = [row.id for run in runs for row in run]
        held = RelayDelivery.filter(id__in=ids, claim=token, status=DeliveryStatus.PENDING)
        mine = cast(set[int], set(await held.values_list("id", flat=True)))
        runs = [list(takewhile(lambda row: row.id in mine, run)) for run in runs]
        rest = mine - {row.id for run in runs for row in run}
        if rest:
            await release(rest, token, now)
    for run in runs:
        for row in run:
            row.claim, row.next_at = token, leases[row.endpoint_id]
    return runs


async def renew(delivery_ids: Iterable[int], token: str, lease_until: datetime) -> int:
    """Move the lease of a run's deliveries still held under `token`; how many were."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    return await RelayDelivery.filter(id__in=ids, claim=token, status=DeliveryStatus.PENDING).update(
        next_at=lease_until)


async def release(delivery_ids: Iterable[int], token: str, now: datetime) -> int:
    """Give back a run's unsent deliveries: due now, unclaimed (only those still held under `token`)."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    return await RelayDelivery.filter(id__in=ids, claim=token, status=DeliveryStatus.PENDING).update(
        claim=None, next_at=now)


@dataclass(frozen=True, slots=True)
class Success:
    """One delivered attempt, waiting to be written with others (`record_successes`)."""

    delivery_id: int
    endpoint_id: int
    status: int | None
    answered_at: datetime


async def record_successes(done: Sequence[Success]) -> None:
    """Mark delivered attempts delivered (attempts + 1, done_at and last_attempt_at the batch's last
    answer): one UPDATE per distinct status (HTTP 200/204, MQTT 0/16: mostly one), and each
    endpoint's success bookkeeping once."""
    if not done:
        return
    by_status: dict[int | None, list[int]] = {}
    last: dict[int, datetime] = {}
    for item in done:
        by_status.setdefault(item.status, []).append(item.delivery_id)
        last[item.endpoint_id] = max(last.get(item.endpoint_id, item.answered_at), item.answered_at)
    at = max(last.values())
    for status, ids in by_status.items():
        await RelayDelivery.filter(id__in=ids).update(
            status=DeliveryStatus.DELIVERED, attempts=F("attempts") + 1, done_at=at, last_attempt_at=at,
            last_status=status, last_error=None, claim=None)
    for endpoint_id, when in last.items():
        await RelayEndpoint.filter(id=endpoint_id).update(consecutive_failures=0, consecutive_gone=0,
                                                          failing_since=None, last_success_at=when)


async def record(endpoint: RelayEndpoint, delivery: RelayDelivery, outcome: Outcome, now: datetime,
                 attempted_at: datetime | None = None) -> str | None:
    """Apply one attempt's outcome (counted now) to the delivery and its endpoint. Returns the reason
    the endpoint was disabled by it, if it was."""
    if outcome.ok:
        await record_successes([Success(delivery.id, endpoint.id, outcome.status, now)])
        return None
    attempts = delivery.attempts + 1
    attempted_at = attempted_at or now
    error = (outcome.error or (f"status {outcome.status}" if outcome.status is not None else "failed"))[:ERROR_MAX]
    pending = RelayDelivery.filter(id=delivery.id, status=DeliveryStatus.PENDING)
    if attempts >= endpoint.max_attempts:
        await pending.update(status=DeliveryStatus.DEAD, done_at=now, last_status=outcome.status, last_error=error,
                             attempts=attempts, last_attempt_at=attempted_at, claim=None)
    else:
        delay = retry_delay_s(endpoint, attempts, outcome)
        await pending.update(next_at=now + timedelta(seconds=delay), last_status=outcome.status, last_error=error,
                             attempts=attempts, last_attempt_at=attempted_at, claim=None)
    # counters with SQL arithmetic: the endpoint's other queues record their outcomes concurrently
    await RelayEndpoint.filter(id=endpoint.id).update(
        consecutive_failures=F("consecutive_failures") + 1,
        consecutive_gone=F("consecutive_gone") + 1 if outcome.gone else 0,
        last_failure_at=now, last_error=error)
    await RelayEndpoint.filter(id=endpoint.id, failing_since__isnull=True).update(failing_since=now)
    fresh = await RelayEndpoint.get_or_none(id=endpoint.id)
    if fresh is None or not fresh.enabled:
        return None
    reason = None
    if fresh.consecutive_gone >= fresh.gone_limit:
        reason = f"410 Gone {fresh.consecutive_gone} times in a row"
    elif (fresh.consecutive_failures >= fresh.failure_budget and fresh.failing_since is not None
          and (now - fresh.failing_since).total_seconds() >= fresh.failure_window_s):
        reason = (f"{fresh.consecutive_failures} failures in a row over "
                  f"{(now - fresh.failing_since).total_seconds():.0f} s, none succeeding")
    if reason is not None:
        await RelayEndpoint.filter(id=endpoint.id, enabled=True).update(enabled=False, disabled_reason=reason,
                                                                         disabled_at=now)
    return reason


async def bound_outbox(outbox_max: int, now: datetime) -> int:
    """Dead-letter the oldest pending deliveries of every endpoint holding more than `outbox_max`
    (`last_error` "outbox full"). Returns how many."""
    over = await RelayDelivery.filter(status=DeliveryStatus.PENDING).annotate(n=Count("id")) \
        .group_by("endpoint_id").values_list("endpoint_id", "n")
    dropped = 0
    for endpoint_id, count in over:
        if count <= outbox_max:
            continue
        oldest = await RelayDelivery.filter(endpoint_id=endpoint_id, status=DeliveryStatus.PENDING) \
            .order_by("id").limit(count - outbox_max).values_list("id", flat=True)
        dropped += await RelayDelivery.filter(id__in=list(oldest), status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.DEAD, done_at=now, last_error=OUTBOX_FULL)
    return dropped
