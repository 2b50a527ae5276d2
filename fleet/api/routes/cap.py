"""CAP 1.2 alerts (/api/cap): import one as a draft broadcast, an operator confirms or refuses it.

The rules are fleet/broadcast/cap.py's (the document) and cap_import.py's (the draft, the
confirmation); here they meet HTTP (docs/broadcasts.md, "CAP 1.2").
"""

import functools
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from fleet.api.deps import LOGGED_IN, Auditor, Reader, RowId, RuntimeDep, acting
from fleet.api.errors import ErrorPublic, ValidationErrorPublic, answer
from fleet.api.routes.audio import LibraryDep
from fleet.api.routes.broadcasts import CalendarDep, ReviewPublic, _review, deliver
from fleet.auth.roles import Permission
from fleet.broadcast import cap
from fleet.broadcast.audio_tools import AudioError
from fleet.broadcast.calendar import Calendar, CalendarError, NeedsConfirmation
from fleet.broadcast.cap_import import CapImport
from fleet.broadcast.cap_models import CapAlert, CapState
from fleet.broadcast.emergency import start_emergency, stop_emergency
from fleet.broadcast.models import Level

CAP_PATH = "/api/cap"
router = APIRouter(prefix=CAP_PATH, tags=["CAP alerts"], dependencies=[LOGGED_IN])
CAP_MAX = cap.DOCUMENT_MAX  # bytes of XML; the request guard lets this path's body through up to it
XML_TYPES = frozenset({"application/cap+xml", "application/xml"})
TOTAL_HEADER = "X-Total-Count"


def importer_of(calendar: CalendarDep, library: LibraryDep, runtime: RuntimeDep) -> CapImport:
    # an emergency that starts now takes the emergency button's path when this process runs the worker
    emergency = functools.partial(start_emergency, runtime) if runtime.broadcasts is not None else None
    return CapImport(calendar, library, emergency)


ImporterDep = Annotated[CapImport, Depends(importer_of)]


class DraftPublic(BaseModel):
    kind: Literal["broadcast", "cancel"] = Field(description="broadcast (an Alert or an Update) or cancel")
    title: str | None
    level: Level | None = Field(description="Extreme severity or Immediate urgency: emergency; Severe: priority; "
                                            "else normal")
    start: datetime | None = Field(description="the alert's effective time when it is ahead; null: a minute after "
                                               "the confirmation")
    expires: datetime | None = Field(description="an emergency stays in force until then")
    targets: dict[str, list[str]] | None = Field(description="wards (named, or all of whose speakers are in a "
                                                             "shape) and single speakers")
    speakers: list[str] = Field(description="every speaker the area matched")
    wards_named: list[str] = Field(description="wards an areaDesc names")
    in_shapes: list[str] = Field(description="speakers inside a polygon or a circle")
    clip_id: int | None
    clip_source: str | None = Field(description="resource (the alert's audio) or tts (its text spoken)")
    clip_reused: bool = Field(description="the same audio or text was in the library already")
    voice: str | None
    language: str | None
    event: str | None
    urgency: str | None
    severity: str | None
    certainty: str | None
    updates: list[int] = Field(description="the CAP alerts (ids here) an Update replaces")
    edits_broadcast: int | None = Field(description="the broadcast an Update makes a new version of")
    cancels: list[int] = Field(description="the CAP alerts (ids here) a Cancel names")
    cancels_broadcasts: list[int] = Field(description="their broadcasts, as of the import")
    notes: list[str] = Field(description="what the mapping could not do as the alert asked (a link not fetched, "
                                         "audio refused, text cut, …)")


class CapPublic(BaseModel):
    id: int
    identifier: str
    sender: str
    sent: datetime
    msg_type: str
    status: str
    state: CapState
    reason: str | None
    broadcast_id: int | None
    created_at: datetime
    created_by: str
    decided_at: datetime | None
    decided_by: str | None
    draft: DraftPublic
    review: ReviewPublic | None = Field(default=None, description="a draft's: what confirming it would do now "
                                                                  "(occurrences, speakers, quiet skips, conflicts)")


class CapConfirmed(CapPublic):
    action: str = Field(description="created, edited (an Update's new version), emergency (started at once as the "
                                    "emergency button does) or cancelled")
    cancelled_broadcasts: list[int] = Field(default_factory=list)
    cancelled_alerts: list[int] = Field(default_factory=list, description="drafts an Update or a Cancel replaced")


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confirm: bool = Field(default=False, description="save even though the broadcast has conflicts")


class RefuseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=200)


class CapConflictPublic(ErrorPublic):
    review: ReviewPublic | None = Field(default=None, description="with conflicts: what they are (send again with "
                                                                  "confirm=true); absent for the other refusals")


class CapProblem(BaseModel):
    loc: list[str] = Field(description="['body', the element's path: /alert/info[1]/area[1]/polygon[2]]")
    msg: str
    type: str = "cap"


class CapInvalidPublic(BaseModel):
    detail: list[CapProblem] | str = Field(description="the problems (at most 20), or one sentence for a valid "
                                                       "alert the fleet does not broadcast")


def _public(row: CapAlert, review: Any = None, calendar: Calendar | None = None, **extra: Any) -> dict[str, Any]:
    fields = {name: getattr(row, name) for name in CapPublic.model_fields if name not in ("draft", "review")}
    shown = {**fields, "draft": DraftPublic.model_validate(row.draft),
             "review": _review(review, calendar.tz) if review is not None and calendar is not None else None, **extra}
    return shown


# every column but the XML (up to 1 MB each): what the lists and the reads show
SHOWN_COLUMNS = ("id", "identifier", "sender", "sent", "msg_type", "status", "draft", "state", "reason",
                 "broadcast_id", "created_at", "created_by", "decided_at", "decided_by")


async def _get(cap_id: int, *columns: str) -> CapAlert:
    selected = CapAlert.filter(id=cap_id)
    row = await (selected.only(*columns) if columns else selected).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no CAP alert {cap_id}")
    return row


async def _body(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in XML_TYPES:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "send the alert as XML (Content-Type: application/cap+xml or application/xml)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > CAP_MAX:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"request body over the limit of {CAP_MAX} bytes",
                                headers={"Connection": "close"})
        chunks.append(chunk)
    return b"".join(chunks)


def _refusal(err: cap.CapError | CalendarError | AudioError, calendar: Calendar) -> JSONResponse:
    if isinstance(err, cap.CapInvalid):
        problems = [CapProblem(loc=["body", p.path], msg=p.message) for p in err.problems]
        return JSONResponse(CapInvalidPublic(detail=problems).model_dump(), status_code=422)
    if isinstance(err, NeedsConfirmation):
        content = CapConflictPublic(detail=str(err), review=_review(err.review, calendar.tz))
        return JSONResponse(content.model_dump(mode="json"), status_code=status.HTTP_409_CONFLICT)
    return JSONResponse({"detail": str(err)}, status_code=err.status)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CapPublic, openapi_extra={
    "requestBody": {"required": True, "description": f"a CAP 1.2 alert, at most {cap.DOCUMENT_MAX} bytes",
                    "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in XML_TYPES}}},
    responses={409: answer("this alert (sender and identifier) was imported already, or the library refused its "
                           "audio (full)"),
               413: answer(f"the body is over {cap.DOCUMENT_MAX} bytes"),
               415: answer("the body is not sent as application/cap+xml or application/xml"),
               422: {"model": CapInvalidPublic,
                     "description": "not well-formed XML, a DTD or entity, not a valid CAP 1.2 alert (the problems by "
                                    "element path); or a valid alert the fleet does not broadcast: not Actual, an Ack "
                                    "or Error, expired, no speaker in its area, no voice for its language, a Cancel "
                                    "of nothing imported (one sentence)"},
               503: answer("ffmpeg or espeak-ng is missing or took too long, or the library is busy")})
async def import_alert(request: Request, importer: ImporterDep, calendar: CalendarDep,
                       audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> Any:
    """Import a CAP 1.2 alert as a draft broadcast (its speakers, its clip, the calendar's review): nothing
    goes out until an operator confirms it."""
    document = await _body(request)
    try:
        imported = await importer.import_alert(document, audit.actor, datetime.now(UTC))
    except (cap.CapError, CalendarError, AudioError) as err:
        return _refusal(err, calendar)
    row = imported.row
    await audit("cap.import", str(row.id), {"identifier": row.identifier[:80], "sender": row.sender[:80],
                                            "msg_type": row.msg_type, "level": row.draft.get("level"),
                                            "speakers": len(row.draft.get("speakers") or [])})
    return JSONResponse(CapPublic(**_public(row, imported.review, calendar)).model_dump(mode="json"),
                        status_code=status.HTTP_201_CREATED)


@router.get("", responses={200: {"headers": {TOTAL_HEADER: {
    "description": "how many CAP alerts match", "schema": {"type": "integer"}}}}})
async def list_alerts(_: Reader, response: Response, state: CapState | None = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100,
                      offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[CapPublic]:
    """Imported CAP alerts, newest first (without their reviews: GET one for it)."""
    selected = CapAlert.all() if state is None else CapAlert.filter(state=state)
    response.headers[TOTAL_HEADER] = str(await selected.count())
    rows = await selected.order_by("-id").offset(offset).limit(limit).only(*SHOWN_COLUMNS)
    return [CapPublic(**_public(row)) for row in rows]


@router.get("/{cap_id}")
async def get_alert(cap_id: RowId, _: Reader, importer: ImporterDep, calendar: CalendarDep) -> CapPublic:
    """One imported alert; a draft with what confirming it would do now."""
    row = await _get(cap_id, *SHOWN_COLUMNS)
    try:
        review = await importer.review(row, datetime.now(UTC))
    except CalendarError:  # the clip was deleted meanwhile, or its time passed: confirming will say so
        review = None
    return CapPublic(**_public(row, review, calendar))


@router.get("/{cap_id}/document", response_class=Response, responses={
    200: {"content": {"application/cap+xml": {}}, "description": "the alert's XML as it was received"}})
async def alert_document(cap_id: RowId, _: Reader) -> Response:
    """The XML as received (a download: never shown inline, the fleet does not vouch for its content)."""
    row = await _get(cap_id, "id", "document")
    return Response(row.document, media_type="application/cap+xml",
                    headers={"Content-Disposition": f'attachment; filename="cap-{row.id}.xml"'})


@router.post("/{cap_id}/confirm", response_model=CapConfirmed, responses={
    409: {"model": CapConflictPublic, "description": "not a draft, expired, or the broadcast has conflicts (`review` "
                                                   "lists them: send again with confirm=true)"},
    422: {"model": ValidationErrorPublic, "description": "the calendar refuses the broadcast, e.g. its clip was "
                                                         "deleted (one sentence); or a bad request shape (a list)"}})
async def confirm_alert(cap_id: RowId, importer: ImporterDep, calendar: CalendarDep, runtime: RuntimeDep,
                        audit: Annotated[Auditor, acting(Permission.BROADCAST)], body: ConfirmIn | None = None) -> Any:
    """Carry out a draft: its broadcast is made (an Update: the broadcast it replaces gets a new version), or
    what a Cancel names is cancelled."""
    row = await _get(cap_id)
    now = datetime.now(UTC)
    try:
        done = await importer.confirm(row, audit.actor, now, confirm=bool(body and body.confirm))
    except (cap.CapError, CalendarError) as err:
        return _refusal(err, calendar)
    cancelled = [b.id for b in done.cancelled]
    await audit("cap.confirm", str(row.id), {"msg_type": row.msg_type, "action": done.action,
                                             "broadcast": done.row.broadcast_id, "cancelled_broadcasts": cancelled,
                                             "cancelled_alerts": done.cancelled_alerts})
    # the speakers learn it as from the broadcasts API (an emergency's start has done its own)
    if done.broadcast is not None and done.action in ("created", "edited"):
        await deliver(calendar.nudge, done.action, targets=[t for t in (done.targets_before,
                                                                          done.broadcast.targets) if t])
    for broadcast in done.cancelled:
        if broadcast.level == Level.EMERGENCY:  # the Pi speakers that may still play it are told to stop
            await stop_emergency(runtime, broadcast, now)
    if done.cancelled:
        await deliver(calendar.nudge, "cancelled", targets=[b.targets for b in done.cancelled])
    return CapConfirmed(**_public(done.row, done.review, calendar), action=done.action,
                        cancelled_broadcasts=cancelled, cancelled_alerts=done.cancelled_alerts)


@router.post("/{cap_id}/refuse", responses={409: answer("not a draft")})
async def refuse_alert(cap_id: RowId, importer: ImporterDep, audit: Annotated[Auditor, acting(Permission.BROADCAST)],
                       body: RefuseIn | None = None) -> CapPublic:
    """Decline a draft: it will not go out."""
    row = await _get(cap_id)
    try:
        row = await importer.refuse(row, audit.actor, datetime.now(UTC), (body.reason if body else "").strip())
    except cap.CapError as err:
        raise HTTPException(err.status, str(err)) from err
    await audit("cap.refuse", str(row.id), {"reason": row.reason})
    return CapPublic(**_public(row))

