"""The outbox's operations for the API and the relay worker (docs/relay.md, "Endpoints and
delivery"): replay dead letters, enable an endpoint, rotate its secret. Small and pure over the
tables; whoever calls them nudges the relay worker (`Runtime.relay.nudge()`) afterwards."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from fleet.ops import webhook_sign
from fleet.relay.models import DeliveryStatus, RelayDelivery, RelayEndpoint

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
