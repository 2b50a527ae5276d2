"""A compressed reading's series, reconstructed as the device meant it (docs/fleet.md, "Compressed
series"; docs/protocol.md, "Compressed series"): the points a Pi sensor sent (swinging door or
mixed PLA) and, on request, the values at regular times by linear interpolation between them
(contract/series.py), within the device's stated maximum error of every sample it took."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from contract.series import Knot, interpolate
from fleet.api.deps import LOGGED_IN, DeviceDep, Reader
from fleet.api.routes.data import Moment
from fleet.models import TelemetryRecord

router = APIRouter(prefix="/api/devices/{device_id}", tags=["device data"], dependencies=[LOGGED_IN])

ROWS_MAX = 20_000  # telemetry rows one request reads (in the range, plus one on each side)
VALUES_MAX = 10_000  # interpolated values one request returns
DEFAULT_RANGE = timedelta(hours=24)


class SeriesValue(BaseModel):
    at: datetime
    value: float


class SeriesPublic(BaseModel):
    device: str
    role: str | None
    field: str
    start: datetime
    end: datetime
    points: list[SeriesValue]  # what the device sent, oldest first (with one on each side of the range)
    values: list[SeriesValue]  # at start + k·step_ms within [start, end), where points surround them


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _knots(rows: list[Any], field: str) -> list[Knot]:
    """One point per time: the last one received for a time wins (a reading sent again)."""
    by_time: dict[int, float] = {}
    for row in rows:
        value = row.readings.get(field) if isinstance(row.readings, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            by_time[_ms(row.at)] = float(value)
    return sorted(by_time.items())


REFUSALS = (f"'from' not before 'to', more than {ROWS_MAX} rows in the range, or more than {VALUES_MAX} values "
            "asked")


@router.get("/series", responses={422: {"description": REFUSALS}})
async def device_series(
    device: DeviceDep,
    _: Reader,
    field: Annotated[str, Query(min_length=1, max_length=64, description="a reading's name: pm25, temp")],
    role: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z][a-z0-9_]{0,31}$",
                                      description="telemetry of this role only")] = None,
    start: Annotated[Moment | None, Query(alias="from", description="ISO 8601 (no offset: UTC); default "
                                                                    "24 h before 'to'")] = None,
    end: Annotated[Moment | None, Query(alias="to", description="ISO 8601 (no offset: UTC); default now")] = None,
    step_ms: Annotated[int | None, Query(ge=1, le=86_400_000,
                                         description="also the values every step_ms from 'from'")] = None,
) -> SeriesPublic:
    """The points of one reading in [from, to) and the one just before and after (so the series
    is known up to the range's edges); with `step_ms`, its values at from, from + step_ms, ...
    (before 'to') that lie between two points, by linear interpolation."""
    end = end or datetime.now(UTC)
    try:
        start = start or end - DEFAULT_RANGE
    except OverflowError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'to' is too early for the default range; "
                                                                   "give 'from'") from None
    if start >= end:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'from' must be before 'to'")
    if step_ms is not None and -(-(_ms(end) - _ms(start)) // step_ms) > VALUES_MAX:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"more than {VALUES_MAX} values: a larger step_ms or a shorter range")
    query = TelemetryRecord.filter(device_id=device.id)
    if role:
        query = query.filter(role=role)
    inside = await query.filter(at__gte=start, at__lt=end).order_by("at", "ses", "seq").limit(ROWS_MAX + 1)
    if len(inside) > ROWS_MAX:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"more than {ROWS_MAX} telemetry rows in the range: a shorter range")
    # the nearest point of this reading on each side (scanning a bounded number of rows back/forward)
    before = await query.filter(at__lt=start).order_by("-at", "-ses", "-seq").limit(64)
    after = await query.filter(at__gte=end).order_by("at", "ses", "seq").limit(64)
    knots = _knots(inside, field)
    below = _knots(before, field)
    above = _knots(after, field)
    knots = below[-1:] + knots + above[:1]
    values: list[SeriesValue] = []
    if step_ms is not None and knots:
        first, last = _ms(start), _ms(end)
        times = list(range(first, last, step_ms))
        values = [SeriesValue(at=_at(t), value=v) for t, v in zip(times, interpolate(knots, times), strict=True)
                  if v is not None]
    return SeriesPublic(device=device.id, role=role, field=field, start=start, end=end,
                        points=[SeriesValue(at=_at(t), value=v) for t, v in knots], values=values)
