"""The broadcasts calendar (/api/broadcasts) and the wards' quiet hours (/api/quiet-hours).

The rules are fleet/broadcast/calendar.py's; here they meet HTTP (docs/broadcasts.md,
"Broadcasts calendar"). Each change marks the speakers it touches due for a new document and
nudges the delivery (fleet/broadcast/delivery.py).
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contract import DEVICE_ID_PATTERN
from fleet.api.deps import LOGGED_IN, Auditor, Reader, RowId, RuntimeDep, acting
from fleet.api.errors import ErrorPublic, ValidationErrorPublic, answer
from fleet.api.schemas import TAG_PATTERN
from fleet.auth.roles import Permission
from fleet.broadcast.calendar import (
    TARGETS_MAX,
    Calendar,
    CalendarError,
    Definition,
    NeedsConfirmation,
    Review,
    Targets,
    stored_timing,
)
from fleet.broadcast.delivery import mark_targets_due, mark_ward_due
from fleet.broadcast.emergency import stop_emergency
from fleet.broadcast.models import Broadcast, BroadcastStatus, BroadcastVersion, Level, WardQuietHours
from fleet.broadcast.schedule import (
    COUNT_MAX,
    EXCEPTIONS_MAX,
    RRULE_MAX,
    Occurrence,
    QuietHours,
    ScheduleError,
    local_start,
)
from fleet.runtime import Runtime

router = APIRouter(prefix="/api/broadcasts", tags=["broadcasts"], dependencies=[LOGGED_IN])
quiet_router = APIRouter(prefix="/api/quiet-hours", tags=["broadcasts"], dependencies=[LOGGED_IN])
LISTED_MAX = 100
REPEAT_LEAD = timedelta(minutes=1)
log = logging.getLogger(__name__)


def nudge_of(runtime: Runtime) -> Callable[[], None] | None:
    return runtime.broadcasts.nudge if runtime.broadcasts is not None else None


async def deliver(nudge: Callable[[], None] | None, reason: str, *, targets: Sequence[Mapping[str, Sequence[str]]] = (),
                  ward: str | None = None) -> None:
    """Mark the speakers a change touches due for a new document, and nudge the delivery. The change
    is saved already: a failure here is logged (the daily refresh and the next change catch up)."""
    try:
        if targets:
            await mark_targets_due(targets, reason)
        if ward is not None:
            await mark_ward_due(ward, reason)
    except Exception as err:
        log.error("broadcasts: could not mark speakers due after %s (%s: %.200s)", reason, type(err).__name__, err)
    if nudge is not None:
        nudge()


def calendar_of(request: Request) -> Calendar:
    runtime: Runtime = request.app.state.runtime
    return Calendar(ZoneInfo(runtime.settings.timezone), runtime.settings.broadcast_conflict_days, nudge_of(runtime))


CalendarDep = Annotated[Calendar, Depends(calendar_of)]
Ward = Annotated[str, Field(min_length=1, max_length=80)]
WardPath = Annotated[str, Path(min_length=1, max_length=80)]
Tag = Annotated[str, Field(pattern=TAG_PATTERN)]
SpeakerId = Annotated[str, Field(pattern=f"^{DEVICE_ID_PATTERN}$")]


class TargetsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wards: list[Ward] = Field(default_factory=list, max_length=TARGETS_MAX)
    tags: list[Tag] = Field(default_factory=list, max_length=TARGETS_MAX, description="a group is a tag")
    devices: list[SpeakerId] = Field(default_factory=list, max_length=TARGETS_MAX)


class BroadcastFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    clip_id: int = Field(ge=1, le=2**31 - 1)
    level: Level = Level.NORMAL
    targets: TargetsIn
    start: datetime = Field(description="the first occurrence: a wall-clock time in FLEET_TIMEZONE "
                                        "(2026-12-01T06:30), or a time with an offset (converted)")
    rrule: str = Field(default="", max_length=RRULE_MAX,
                       description="empty: once; else an RFC 5545 RRULE value without DTSTART, UNTIL, COUNT")
    until: date | None = Field(default=None, description="last local date of a recurring broadcast, inclusive")
    count: int | None = Field(default=None, ge=1, le=COUNT_MAX)
    exceptions: list[date] = Field(default_factory=list, max_length=EXCEPTIONS_MAX,
                                   description="local dates on which it does not play")
    order: int = Field(default=100, ge=0, le=1000,
                       description="among broadcasts of the same level, the lower order wins a conflict")
    confirm: bool = Field(default=False, description="save even though there are conflicts (they are resolved "
                                                     "by level, then order, then age)")


class BroadcastCreate(BroadcastFields):
    dry_run: bool = Field(default=False, description="only review: occurrences, speakers, conflicts; nothing saved")


class BroadcastUpdate(BroadcastFields):
    version: int = Field(ge=1, le=2**31 - 1, description="the version being edited (409 if it changed meanwhile)")
    dry_run: bool = False


class RepeatCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: datetime | None = Field(default=None, description="default: one minute from now")
    dry_run: bool = False
    confirm: bool = False


class OccurrencePublic(BaseModel):
    start: datetime = Field(description="UTC")
    local: str = Field(description="the same instant on the wall clock of the broadcast's zone, with its offset")


class ConflictPublic(BaseModel):
    other_id: int
    other_title: str
    start: datetime = Field(description="this broadcast's occurrence (UTC)")
    other_start: datetime
    speakers: list[str]
    winner: str = Field(description="'this' or 'other': whose occurrence plays on these speakers")
    reason: str = Field(description="level, order or older")


class QuietSkipPublic(BaseModel):
    start: datetime
    speakers: list[str]


class ReviewPublic(BaseModel):
    occurrences: list[OccurrencePublic] = Field(description="the next occurrences (at most 10)")
    speakers: list[str] = Field(description="the speakers targeted now")
    quiet: list[QuietSkipPublic] = Field(description="normal occurrences that do not play on some speakers: "
                                                     "their ward's quiet hours")
    conflicts: list[ConflictPublic]
    conflicts_total: int


class ConflictsPublic(ErrorPublic):
    review: ReviewPublic


class BroadcastPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    title: str
    clip_id: int
    level: Level
    targets: dict[str, list[str]]
    start_local: str
    timezone: str
    rrule: str
    until: str | None
    count: int | None
    exceptions: list[str]
    order: int
    status: BroadcastStatus
    version: int
    repeat_of: int | None
    ends_at: datetime | None = Field(description="the end of the last occurrence; null while it recurs without end")
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    next: list[OccurrencePublic] = Field(default_factory=list)


class BroadcastSaved(BaseModel):
    broadcast: BroadcastPublic
    review: ReviewPublic


class VersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    version: int
    status: str
    definition: dict[str, Any]
    created_at: datetime
    created_by: str


class QuietHoursIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local; before start: across midnight")


class QuietHoursPublic(QuietHoursIn):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
    ward: str
    updated_by: str


def _occurrences(items: list[Occurrence], tz: ZoneInfo) -> list[OccurrencePublic]:
    # the wall clock of the instant, with its offset: on a skipped spring hour it is not the rule's time
    return [OccurrencePublic(start=o.start, local=o.start.astimezone(tz).isoformat()) for o in items]


def _review(review: Review, tz: ZoneInfo) -> ReviewPublic:
    return ReviewPublic(
        occurrences=_occurrences(review.occurrences, tz), speakers=review.speakers,
        quiet=[QuietSkipPublic(start=start, speakers=speakers) for start, speakers in sorted(review.quiet.items())],
        conflicts=[ConflictPublic(other_id=c.other_id, other_title=c.other_title, start=c.start,
                                  other_start=c.other_start, speakers=list(c.speakers), winner=c.winner,
                                  reason=c.reason) for c in review.conflicts],
        conflicts_total=review.conflicts_total)


def _public(broadcast: Broadcast, now: datetime, listed: int = 10) -> BroadcastPublic:
    timing = stored_timing(broadcast)
    upcoming = timing.next(now, listed) if broadcast.status == BroadcastStatus.ACTIVE else []
    return BroadcastPublic.model_validate(broadcast).model_copy(update={"next": _occurrences(upcoming, timing.tz)})


def _definition(body: BroadcastFields, calendar: Calendar) -> Definition:
    return Definition(body.title.strip() or body.title, body.clip_id, body.level,
                      Targets(tuple(body.targets.wards), tuple(body.targets.tags), tuple(body.targets.devices)),
                      local_start(body.start, calendar.tz), body.rrule, body.until, body.count,
                      frozenset(body.exceptions), body.order)


def _refused(err: CalendarError, tz: ZoneInfo) -> HTTPException | JSONResponse:
    if isinstance(err, NeedsConfirmation):
        content = ConflictsPublic(detail=str(err), review=_review(err.review, tz))
        return JSONResponse(content.model_dump(mode="json"), status_code=status.HTTP_409_CONFLICT)
    return HTTPException(err.status, str(err))


async def _get(broadcast_id: int) -> Broadcast:
    broadcast = await Broadcast.get_or_none(id=broadcast_id)
    if broadcast is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no broadcast {broadcast_id}")
    return broadcast


_SAVE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": ReviewPublic, "description": "dry run: what saving would do; nothing saved"},
    409: {"model": ConflictsPublic, "description": "conflicts on shared speakers (`review` lists them): send "
                                                   "again with confirm=true; or the broadcast changed or is "
                                                   "cancelled (detail only)"},
    422: {"model": ValidationErrorPublic,
          "description": "a bad timing, no targets, no such clip, no occurrence after now (one sentence); or a "
                         "bad request shape (a list)"}}


async def _save(calendar: Calendar, definition: Definition, dry_run: bool, confirm: bool, actor: str,
                now: datetime, *, broadcast: Broadcast | None = None, version: int = 0,
                repeat_of: int | None = None) -> Any:
    try:
        if dry_run:
            review = await calendar.review(definition, broadcast.id if broadcast else None, now)
            return JSONResponse(_review(review, calendar.tz).model_dump(mode="json"))
        if broadcast is None:
            saved, review = await calendar.create(definition, actor, now, confirm=confirm, repeat_of=repeat_of)
        else:
            saved, review = await calendar.edit(broadcast, definition, version, actor, now, confirm=confirm)
    except CalendarError as err:
        refusal = _refused(err, calendar.tz)
        if isinstance(refusal, HTTPException):
            raise refusal from err
        return refusal
    return BroadcastSaved(broadcast=_public(saved, now), review=_review(review, calendar.tz))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BroadcastSaved, responses=_SAVE_ANSWERS)
async def create_broadcast(body: BroadcastCreate, calendar: CalendarDep,
                           audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> Any:
    """Schedule a broadcast; `dry_run` shows its occurrences, speakers and conflicts without saving."""
    now = datetime.now(UTC)
    result = await _save(calendar, _definition(body, calendar), body.dry_run, body.confirm, audit.actor, now)
    if isinstance(result, BroadcastSaved):
        await audit("broadcast.create", str(result.broadcast.id),
                    {"title": result.broadcast.title, "level": result.broadcast.level.value,
                     "conflicts": result.review.conflicts_total})
        await deliver(calendar.nudge, "created", targets=[result.broadcast.targets])
    return result


TOTAL_HEADER = "X-Total-Count"


@router.get("", responses={200: {"headers": {TOTAL_HEADER: {
    "description": "how many broadcasts match", "schema": {"type": "integer"}}}}})
async def list_broadcasts(_: Reader, response: Response, status_: Annotated[BroadcastStatus | None,
                          Query(alias="status")] = None, level: Level | None = None,
                          limit: Annotated[int, Query(ge=1, le=500)] = 100,
                          offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[BroadcastPublic]:
    """Broadcasts, newest first, each with its next 3 occurrences."""
    selected = Broadcast.all()
    if status_ is not None:
        selected = selected.filter(status=status_)
    if level is not None:
        selected = selected.filter(level=level)
    response.headers[TOTAL_HEADER] = str(await selected.count())
    now = datetime.now(UTC)
    return [_public(b, now, 3) for b in await selected.order_by("-id").offset(offset).limit(limit)]


@router.get("/{broadcast_id}")
async def get_broadcast(broadcast_id: RowId, _: Reader,
                        next_: Annotated[int, Query(alias="next", ge=0, le=LISTED_MAX)] = 10) -> BroadcastPublic:
    """One broadcast with its next occurrences."""
    return _public(await _get(broadcast_id), datetime.now(UTC), next_)


@router.get("/{broadcast_id}/versions")
async def broadcast_versions(broadcast_id: RowId, _: Reader) -> list[VersionPublic]:
    broadcast = await _get(broadcast_id)
    rows = await BroadcastVersion.filter(broadcast_id=broadcast.id).order_by("version")
    return [VersionPublic.model_validate(r) for r in rows]


@router.put("/{broadcast_id}", response_model=BroadcastSaved, responses=_SAVE_ANSWERS)
async def edit_broadcast(broadcast_id: RowId, body: BroadcastUpdate, calendar: CalendarDep,
                         audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> Any:
    """Replace a broadcast's definition: a new version (409 if `version` is not the current one)."""
    broadcast = await _get(broadcast_id)
    before = dict(broadcast.targets)  # a speaker no longer targeted gets its entries removed
    now = datetime.now(UTC)
    result = await _save(calendar, _definition(body, calendar), body.dry_run, body.confirm, audit.actor, now,
                         broadcast=broadcast, version=body.version)
    if isinstance(result, BroadcastSaved):
        await audit("broadcast.edit", str(broadcast.id), {"version": result.broadcast.version,
                                                          "conflicts": result.review.conflicts_total})
        await deliver(calendar.nudge, "edited", targets=[before, result.broadcast.targets])
    return result


@router.post("/{broadcast_id}/cancel", responses={409: answer("already cancelled")})
async def cancel_broadcast(broadcast_id: RowId, calendar: CalendarDep, request: Request,
                           audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> BroadcastPublic:
    broadcast = await _get(broadcast_id)
    now = datetime.now(UTC)
    try:
        broadcast = await calendar.cancel(broadcast, audit.actor, now)
    except CalendarError as err:
        raise HTTPException(err.status, str(err)) from err
    await audit("broadcast.cancel", str(broadcast.id), {"version": broadcast.version})
    if broadcast.level == Level.EMERGENCY:  # the Pi speakers that may still play it are told to stop
        await stop_emergency(request.app.state.runtime, broadcast, now)
    await deliver(calendar.nudge, "cancelled", targets=[broadcast.targets])
    return _public(broadcast, now)


@router.post("/{broadcast_id}/repeat", status_code=status.HTTP_201_CREATED, response_model=BroadcastSaved,
             responses=_SAVE_ANSWERS)
async def repeat_broadcast(broadcast_id: RowId, body: RepeatCreate, calendar: CalendarDep,
                           audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> Any:
    """A new one-off broadcast with this one's clip, targets, level and order, at `start`."""
    broadcast = await _get(broadcast_id)
    now = datetime.now(UTC)
    start = local_start(body.start or now + REPEAT_LEAD, calendar.tz)
    result = await _save(calendar, calendar.repeat_definition(broadcast, start), body.dry_run, body.confirm,
                         audit.actor, now, repeat_of=broadcast.id)
    if isinstance(result, BroadcastSaved):
        await audit("broadcast.repeat", str(result.broadcast.id), {"repeat_of": broadcast.id})
        await deliver(calendar.nudge, "repeated", targets=[result.broadcast.targets])
    return result


@quiet_router.get("")
async def list_quiet_hours(_: Reader) -> list[QuietHoursPublic]:
    return [QuietHoursPublic.model_validate(r) for r in await WardQuietHours.all().order_by("ward")]


@quiet_router.put("/{ward}", responses={422: {"model": ValidationErrorPublic,
                                             "description": "start and end are the same time, or a bad shape"}})
async def set_quiet_hours(ward: WardPath, body: QuietHoursIn, runtime: RuntimeDep,
                          audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> QuietHoursPublic:
    """A ward's quiet hours: normal broadcasts starting inside them do not play on its speakers."""
    try:
        hours = QuietHours.parse(body.start, body.end)
    except ScheduleError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    if hours.start_min == hours.end_min:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "start and end are the same time")
    row, _ = await WardQuietHours.update_or_create(defaults={"start": body.start, "end": body.end,
                                                              "updated_by": audit.actor}, ward=ward)
    await audit("quiet_hours.set", ward, {"start": body.start, "end": body.end})
    await deliver(nudge_of(runtime), "quiet hours", ward=ward)
    return QuietHoursPublic.model_validate(row)


@quiet_router.delete("/{ward}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_quiet_hours(ward: WardPath, runtime: RuntimeDep,
                             audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> Response:
    if not await WardQuietHours.filter(ward=ward).delete():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"ward {ward!r} has no quiet hours")
    await audit("quiet_hours.delete", ward)
    await deliver(nudge_of(runtime), "quiet hours", ward=ward)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
