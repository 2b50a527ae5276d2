"""A device's health or telemetry over a time range, downsampled on the server (docs/ops.md,
"Dashboard"): what the device page's charts draw, for any other client too."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from fleet.api.deps import LOGGED_IN, DeviceDep, Reader
from fleet.api.routes.data import Moment
from fleet.ops import history

router = APIRouter(prefix="/api/devices/{device_id}", tags=["device data"], dependencies=[LOGGED_IN])

MAX_RANGE = timedelta(days=400)  # retention keeps hourly aggregates for months, not years
DEFAULT_RANGE = timedelta(hours=24)
MAX_POINTS = history.POINTS_MAX


class HistoryPoint(BaseModel):
    at: datetime  # the bucket's start
    min: float
    max: float
    mean: float
    n: int  # raw values in the bucket


class HistoryPublic(BaseModel):
    device: str
    source: Literal["health", "telemetry"]
    field: str
    role: str | None
    start: datetime
    end: datetime
    points: list[HistoryPoint]


class HistoryRefused(ValueError):
    """A history question the fleet cannot answer as asked; the message says why."""


def check_range(start: datetime, end: datetime) -> None:
    if start >= end:
        raise HistoryRefused("'from' must be before 'to'")
    if end - start > MAX_RANGE:
        raise HistoryRefused(f"the range is longer than {MAX_RANGE.days} days")


async def check_field(device_id: str, source: history.Source, field: str, role: str | None) -> None:
    known = await history.fields(device_id, source, role)
    if field not in known:
        where = f"{source} of role {role!r}" if role and source == "telemetry" else source
        listed = ", ".join(known[:40]) or "none yet"
        raise HistoryRefused(f"no such numeric field in this device's {where}; it has: {listed}")


REFUSALS = (f"unknown field, 'from' not before 'to', the range over {MAX_RANGE.days} days, or points out of "
            f"2..{MAX_POINTS}")


@router.get("/history", responses={422: {"description": REFUSALS}})
async def device_history(
    device: DeviceDep,
    _: Reader,
    source: Literal["health", "telemetry"],
    field: Annotated[str, Query(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$",
                                description="a dotted path of a numeric value: temp_c, roles.camera.fps")],
    role: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z0-9_\-]+$",
                                      description="telemetry of this role only")] = None,
    start: Annotated[Moment | None, Query(alias="from", description="ISO 8601 (no offset: UTC); default "
                                                                    "24 h before 'to'")] = None,
    end: Annotated[Moment | None, Query(alias="to", description="ISO 8601 (no offset: UTC); default now")] = None,
    points: Annotated[int, Query(ge=2, le=MAX_POINTS, description="at most this many buckets")] = 200,
) -> HistoryPublic:
    """Buckets of equal width over [from, to), each with the min, max and mean of the raw values
    in it and their count; an empty bucket is left out (a gap). Health times are arrival times,
    telemetry times the readings' own."""
    end = end or datetime.now(UTC)
    try:
        start = start or end - DEFAULT_RANGE
    except OverflowError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'to' is too early for the default range; "
                                                                   "give 'from'") from None
    try:
        check_range(start, end)
        await check_field(device.id, source, field, role)
    except HistoryRefused as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    try:
        found = await history.series(device.id, source, field, start, end, points, role)
    except history.HistoryError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    return HistoryPublic(device=device.id, source=source, field=field, role=role, start=start, end=end,
                         points=[HistoryPoint(at=p.at, min=p.min, max=p.max, mean=p.mean, n=p.n) for p in found])
