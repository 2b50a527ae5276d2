"""The delivery policy (docs/relay.md, "Retries, order, and the bounds"): which deliveries are the
heads of their (endpoint, device) queues, claiming one, what an attempt's outcome does to the
delivery and to its endpoint, and the outbox's bound. The loop that runs them is
fleet/relay/service.py.

Claims go through the database, so several fleet instances share one outbox: a head is claimed by
moving its `next_at` a lease ahead (`timeout_s` + LEASE_MARGIN_S) conditionally on the attempts
count it was read with; a process killed mid-send leaves it pending and it is sent again, with the
same message id, once the lease is over.
"""

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.expressions import F
from tortoise.functions import Count, Min

from fleet.relay.models import DeliveryStatus, RelayDelivery, RelayEndpoint
from fleet.relay.transport import Outcome

LEASE_MARGIN_S = 5.0  # a claimed head is not sent by anyone else for timeout_s + this
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


async def claim(head: Head, endpoint: RelayEndpoint, now: datetime) -> RelayDelivery | None:
    """Take the head for one attempt (counted now); None if another instance took it first."""
    taken = await RelayDelivery.filter(id=head.id, status=DeliveryStatus.PENDING, attempts=head.attempts,
                                       next_at__lte=now).update(
        attempts=head.attempts + 1, last_attempt_at=now,
        next_at=now + timedelta(seconds=endpoint.timeout_s + LEASE_MARGIN_S))
    if not taken:
        return None
    return await RelayDelivery.get_or_none(id=head.id)


async def record(endpoint: RelayEndpoint, delivery: RelayDelivery, outcome: Outcome, now: datetime) -> str | None:
    """Apply one attempt's outcome to the delivery and its endpoint. Returns the reason the endpoint
    was disabled by it, if it was."""
    if outcome.ok:
        await RelayDelivery.filter(id=delivery.id).update(status=DeliveryStatus.DELIVERED, done_at=now,
                                                          last_status=outcome.status, last_error=None)
        await RelayEndpoint.filter(id=endpoint.id).update(consecutive_failures=0, consecutive_gone=0,
                                                          failing_since=None, last_success_at=now)
        return None
    error = (outcome.error or (f"status {outcome.status}" if outcome.status is not None else "failed"))[:ERROR_MAX]
    pending = RelayDelivery.filter(id=delivery.id, status=DeliveryStatus.PENDING)
    if delivery.attempts >= endpoint.max_attempts:
        await pending.update(status=DeliveryStatus.DEAD, done_at=now, last_status=outcome.status, last_error=error)
    else:
        delay = retry_delay_s(endpoint, delivery.attempts, outcome)
        await pending.update(next_at=now + timedelta(seconds=delay), last_status=outcome.status, last_error=error)
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
