"""Receipts of a broadcast (/api/broadcasts/{id}/receipts, /summary, /receipts.csv) and the speakers'
clocks (/api/speakers/clocks): reading only, permission `read` (docs/broadcasts.md, "Receipts",
"Clock offsets"). The rules are fleet/broadcast/receipts.py's and clocks.py's.
"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from contract import DEVICE_ID_PATTERN
from fleet.api.deps import LOGGED_IN, Reader, RowId
from fleet.broadcast import clocks, receipts
from fleet.broadcast.models import Broadcast, ReceiptState

router = APIRouter(prefix="/api/broadcasts", tags=["broadcasts"], dependencies=[LOGGED_IN])
speakers = APIRouter(prefix="/api/speakers", tags=["broadcasts"], dependencies=[LOGGED_IN])
TOTAL_HEADER = "X-Total-Count"
TOTAL_ANSWER: dict[int | str, dict[str, Any]] = {200: {"headers": {TOTAL_HEADER: {
    "description": "how many rows match", "schema": {"type": "integer"}}}}}
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]
DeviceQuery = Annotated[str | None, Query(pattern=f"^{DEVICE_ID_PATTERN}$")]
Occurrence = Annotated[datetime | None, Query(
    description="an occurrence's scheduled start: ISO 8601 (without an offset: UTC) or Unix seconds")]


class ClockPublic(BaseModel):
    offset_ms: int | None
    flagged: bool
    set_time_skew_ms: int | None


class ReceiptPublic(BaseModel):
    broadcast_id: int
    entry_id: str
    occurrence_at: datetime
    device_id: str
    version: int
    state: ReceiptState
    reason: str | None
    emergency: bool
    delivered_at: datetime | None
    clip_ready_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    device_started_ms: int | None
    offset_ms: int | None
    start_delay_ms: int | None
    updated_at: datetime
    clock: ClockPublic | None


class TallyPublic(BaseModel):
    total: int
    played: int
    started: int
    failed: int
    failed_by_reason: dict[str, int]
    missed: int
    not_delivered: int
    skipped: int
    pending: int
    delivered: int
    clip_ready: int
    offline: int
    states: dict[str, int]


class OccurrenceTally(TallyPublic):
    occurrence_at: datetime
    entry_id: str


class SummaryPublic(TallyPublic):
    broadcast_id: int
    occurrences: list[OccurrenceTally]


class SpeakerClockPublic(BaseModel):
    device_id: str
    offset_ms: int | None
    samples: int
    flagged: bool
    set_time_at: datetime | None
    set_time_skew_ms: int | None
    updated_at: datetime


async def _exists(broadcast_id: int) -> None:
    if not await Broadcast.filter(id=broadcast_id).exists():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no broadcast {broadcast_id}")


@router.get("/{broadcast_id}/receipts", responses=TOTAL_ANSWER)
async def list_receipts(broadcast_id: RowId, _: Reader, response: Response, occurrence: Occurrence = None,
                        state: ReceiptState | None = None, device: DeviceQuery = None, limit: Limit = 100,
                        offset: Offset = 0) -> list[ReceiptPublic]:
    """Per speaker and occurrence, what happened; times on the fleet's clock (corrected by the
    speaker's offset), `clock` is the speaker's clock now."""
    await _exists(broadcast_id)
    total, rows = await receipts.receipts(broadcast_id, occurrence=occurrence, state=state, device=device,
                                          limit=limit, offset=offset)
    response.headers[TOTAL_HEADER] = str(total)
    return [ReceiptPublic.model_validate(r) for r in rows]


@router.get("/{broadcast_id}/summary")
async def receipts_summary(broadcast_id: RowId, _: Reader) -> SummaryPublic:
    """The receipts counted, in all and per occurrence: played (completed), started, failed by
    reason, missed, not delivered, offline, skipped, pending."""
    await _exists(broadcast_id)
    return SummaryPublic.model_validate(await receipts.summary(broadcast_id))


@router.get("/{broadcast_id}/receipts.csv", response_class=StreamingResponse, responses={200: {
    "content": {"text/csv": {}}, "headers": {
        TOTAL_HEADER: {"description": "how many rows match", "schema": {"type": "integer"}},
        "X-Rows-Max": {"description": "the most rows one export holds", "schema": {"type": "integer"}}}}})
async def receipts_csv(broadcast_id: RowId, _: Reader, occurrence: Occurrence = None,
                       state: ReceiptState | None = None, device: DeviceQuery = None) -> StreamingResponse:
    """The receipts as CSV (UTF-8, RFC 4180), at most receipts.CSV_ROWS_MAX rows (X-Total-Count says
    how many match: narrow by occurrence, state or device for the rest). Text that a spreadsheet
    would run as a formula starts with an apostrophe."""
    await _exists(broadcast_id)
    total, _rows = await receipts.receipts(broadcast_id, occurrence=occurrence, state=state, device=device,
                                           limit=1)
    headers = {TOTAL_HEADER: str(total), "X-Rows-Max": str(receipts.CSV_ROWS_MAX),
               "Content-Disposition": f'attachment; filename="broadcast-{broadcast_id}-receipts.csv"'}
    return StreamingResponse(receipts.csv_rows(broadcast_id, occurrence=occurrence, state=state, device=device),
                             media_type="text/csv; charset=utf-8", headers=headers)


@speakers.get("/clocks", responses=TOTAL_ANSWER)
async def speaker_clocks(_: Reader, response: Response, flagged: bool | None = None, device: DeviceQuery = None,
                         limit: Limit = 100, offset: Offset = 0) -> list[SpeakerClockPublic]:
    """Each speaker's clock offset estimate (its clock minus the fleet's, ms), whether it is flagged
    (above FLEET_CLOCK_OFFSET_MAX_MS), and the last set_time sent and its answer."""
    total, rows = await clocks.clocks(flagged=flagged, device=device, limit=limit, offset=offset)
    response.headers[TOTAL_HEADER] = str(total)
    return [SpeakerClockPublic.model_validate(clocks.public(r)) for r in rows]
