"""What devices sent: health, telemetry by time range, events, sequence gaps."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import AfterValidator

from fleet.api.deps import LOGGED_IN, DeviceDep, Reader
from fleet.api.schemas import EventPublic, GapPublic, HealthPublic, TelemetryPublic
from fleet.models import EventRecord, HealthRecord, SeqGap, TelemetryRecord

router = APIRouter(prefix="/api/devices/{device_id}", tags=["device data"], dependencies=[LOGGED_IN])

Limit = Annotated[int, Query(ge=1, le=10_000)]


def _utc(moment: datetime) -> datetime:
    """A time both databases can compare with: in UTC (no offset given: UTC), years 1 to 9999."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("outside the years 1 to 9999 once converted to UTC") from None


Moment = Annotated[datetime, AfterValidator(_utc)]


def _range(since: datetime | None, until: datetime | None) -> dict[str, datetime]:
    if since and until and since > until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'since' is after 'until'")
    bounds = {}
    if since:
        bounds["at__gte"] = since
    if until:
        bounds["at__lt"] = until
    return bounds


@router.get("/health")
async def device_health(device: DeviceDep, _: Reader, limit: Limit = 100) -> list[HealthPublic]:
    """The newest health reports first."""
    rows = await HealthRecord.filter(device_id=device.id).order_by("-received_at", "-id").limit(limit)
    return [HealthPublic.model_validate(r) for r in rows]


@router.get("/telemetry")
async def device_telemetry(
    device: DeviceDep,
    _: Reader,
    since: Annotated[Moment | None, Query(description="ISO 8601 (no offset: UTC), inclusive")] = None,
    until: Annotated[Moment | None, Query(description="ISO 8601 (no offset: UTC), exclusive")] = None,
    limit: Limit = 1000,
) -> list[TelemetryPublic]:
    """Readings in [since, until), oldest first; `at` is the device's time when it knew it."""
    rows = await TelemetryRecord.filter(device_id=device.id, **_range(since, until)) \
        .order_by("at", "ses", "seq").limit(limit)
    return [TelemetryPublic.model_validate(r) for r in rows]


@router.get("/events")
async def device_events(
    device: DeviceDep,
    _: Reader,
    since: Annotated[Moment | None, Query(description="ISO 8601 (no offset: UTC), inclusive")] = None,
    until: Annotated[Moment | None, Query(description="ISO 8601 (no offset: UTC), exclusive")] = None,
    limit: Limit = 200,
) -> list[EventPublic]:
    rows = await EventRecord.filter(device_id=device.id, **_range(since, until)).order_by("-at").limit(limit)
    return [EventPublic.model_validate(r) for r in rows]


@router.get("/gaps")
async def device_gaps(device: DeviceDep, _: Reader, open_only: bool = False) -> list[GapPublic]:
    """Messages the fleet knows it has not received (docs/protocol.md, "Streams")."""
    query = SeqGap.filter(device_id=device.id)
    if open_only:
        query = query.filter(open=True)
    return [GapPublic.model_validate(g) for g in await query.order_by("ses", "first_seq")]
