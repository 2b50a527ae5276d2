"""The broadcasts for IOC staff (docs/broadcasts.md, "Pages"): `/broadcasts` (a week calendar),
`/broadcasts/new` and `/broadcasts/{id}/edit` (the form, its review with the conflicts, then the
save), `/broadcasts/{id}` (its facts, next occurrences and versions; cancel and repeat).

Every change calls the API's own route functions (fleet/api/routes/broadcasts.py) with the same
models, so a page does exactly what the API does (rules, audit, whatever the routes trigger);
only the answer differs: a page instead of JSON. Texts come from the catalogue (fleet/web/i18n.py).
"""

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from tortoise.expressions import Q
from tortoise.functions import Count

from fleet.api.deps import RowId
from fleet.api.routes import broadcasts as api
from fleet.api.routes import receipts as receipt_api
from fleet.auth.people import Principal
from fleet.broadcast.calendar import stored_timing
from fleet.broadcast.models import Broadcast, BroadcastStatus, Clip, EmergencyDispatch, Level
from fleet.web.broadcast_form import WEEKDAYS, BroadcastForm
from fleet.web.broadcast_kit import (
    Outcome,
    Words,
    call_api,
    choices,
    guarded,
    may_broadcast,
    notice,
    page,
    read_api,
    review_view,
    targets_text,
    timing_text,
    validation_errors,
    week_start,
    words_of,
)
from fleet.web.i18n import COOKIE, LANGUAGES
from fleet.web.pages import _form

router = APIRouter(include_in_schema=False)
WEEK_BROADCASTS = 500  # active broadcasts placed on a week (the most recently changed first)
WEEK_OCCURRENCES = 200  # occurrences of one broadcast in one week (an hourly rule: 168)
DAY_HOURS = (6, 21)  # the calendar shows at least these hours; more when something plays outside
LISTED = 50  # broadcasts in the list under the calendar
NEXT_SHOWN = 10
RECEIPTS_SHOWN = 500  # one occurrence's receipts on the page (the CSV has them all)
OCCURRENCES_SHOWN = 20  # occurrences in the summary's table, the newest
DONE = frozenset({"saved", "cancelled", "repeated", "emergency"})  # ?done= notices after a change


# -- language ----------------------------------------------------------------------------------


@router.get("/lang/{code}")
async def choose_language(code: str, next_: Annotated[str, Query(alias="next", max_length=500)] = "/") -> Response:
    """Remember the pages' language (a cookie) and go back; only a path of this site is followed."""
    target = next_ if next_.startswith("/") and not next_.startswith("//") and "\\" not in next_ else "/"
    response = RedirectResponse(target, status_code=303)
    if code in LANGUAGES:
        response.set_cookie(COOKIE, code, max_age=365 * 86400, path="/", samesite="strict", httponly=True)
    return response


# -- the week calendar -------------------------------------------------------------------------


@router.get("/broadcasts", response_class=HTMLResponse)
async def week_page(request: Request, week: Annotated[date | None, Query()] = None,
                    done: Annotated[str | None, Query(max_length=20)] = None) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    tr = words_of(request)
    calendar = api.calendar_of(request)
    today = datetime.now(calendar.tz).date()
    if week is not None and not date(1971, 1, 1) <= week <= date(9998, 12, 1):
        week = None
    monday = week_start(week or today)
    begin = datetime.combine(monday, datetime.min.time(), calendar.tz).astimezone(UTC)
    end = datetime.combine(monday + timedelta(days=7), datetime.min.time(), calendar.tz).astimezone(UTC)
    playing = await (Broadcast.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=begin), status=BroadcastStatus.ACTIVE)
                     .order_by("-updated_at").limit(WEEK_BROADCASTS))
    cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
    first_hour, last_hour = DAY_HOURS
    placed = 0
    for broadcast in playing:
        for occurrence in stored_timing(broadcast).occurrences(begin, end, WEEK_OCCURRENCES):
            local = occurrence.start.astimezone(calendar.tz)
            first_hour, last_hour = min(first_hour, local.hour), max(last_hour, local.hour)
            cells.setdefault((local.weekday(), local.hour), []).append(
                {"b": broadcast, "time": f"{local:%H:%M}", "sort": local})
            placed += 1
    for items in cells.values():
        items.sort(key=lambda item: (item["sort"], item["b"].id))
    days = [{"date": monday + timedelta(days=i), "name": tr(f"day.long.{i}"),
             "today": monday + timedelta(days=i) == today} for i in range(7)]
    listed = await Broadcast.all().order_by("-id").limit(LISTED)
    return page(request, "broadcasts_week.html", {
        "viewer": viewer, "may_change": may_broadcast(viewer), "days": days, "cells": cells,
        "hours": list(range(first_hour, last_hour + 1)), "placed": placed, "monday": monday,
        "prev": monday - timedelta(days=7), "next": monday + timedelta(days=7), "this_week": week_start(today),
        "sunday": monday + timedelta(days=6), "zone": calendar.tz.key, "levels": list(Level),
        "listed": listed, "done": done if done in DONE else None,
        "next_of": {b.id: _next_text(tr, b) for b in listed}})


def _next_text(tr: Words, broadcast: Broadcast) -> str:
    if broadcast.status != BroadcastStatus.ACTIVE:
        return ""
    upcoming = stored_timing(broadcast).next(datetime.now(UTC), 1)
    return tr.when(upcoming[0].local) if upcoming else tr("list.over")


# -- the form: new, edit, review, save ---------------------------------------------------------


async def form_page(request: Request, viewer: Principal, form: BroadcastForm, *, broadcast: Broadcast | None,
                    outcome: Outcome | None = None, notes: list[str] | None = None) -> Response:
    tr = words_of(request)
    offered = await choices()
    return page(request, "broadcast_form.html", {
        "viewer": viewer, "form": form, "broadcast": broadcast, "choices": offered,
        "levels": [level.value for level in Level], "weekdays": WEEKDAYS,
        "recurrences": ("none", "daily", "weekly", "monthly", "rrule"),
        "errors": outcome.errors if outcome else [], "review": review_view(tr, outcome.review if outcome else None),
        "zone": api.calendar_of(request).tz.key, "notes": notes or [],
        "reviewed": form.fingerprint() if outcome and outcome.review is not None else "",
        "action": f"/broadcasts/{broadcast.id}/edit" if broadcast else "/broadcasts/new"},
        outcome.status if outcome and outcome.errors else 200)


@router.get("/broadcasts/new", response_class=HTMLResponse)
async def new_page(request: Request, clip: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    tomorrow = datetime.now(api.calendar_of(request).tz).date() + timedelta(days=1)
    form = BroadcastForm(start=f"{tomorrow.isoformat()}T06:30", clip_id=str(clip or ""))
    return await form_page(request, viewer, form, broadcast=None)


@router.post("/broadcasts/new", response_class=HTMLResponse)
async def new_submit(request: Request) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    return await form_submit(request, viewer, None)


async def form_submit(request: Request, viewer: Principal, broadcast: Broadcast | None) -> Response:
    """step=review: the API's dry run. step=save: saved only if the values are the ones the person
    reviewed (the review's fingerprint); changed since, they are reviewed again instead."""
    fields = await _form(request)
    form = BroadcastForm.parse(fields)
    tr = words_of(request)
    wants_save = fields.get("step", [""])[0] == "save"
    reviewed = fields.get("reviewed", [""])[0] == form.fingerprint()
    saving = wants_save and reviewed
    model = api.BroadcastUpdate if broadcast is not None else api.BroadcastCreate
    try:
        body = model.model_validate({**form.body(), "dry_run": not saving,
                                     "confirm": saving and fields.get("confirm", [""])[0] == "yes"})
    except ValidationError as err:
        return await form_page(request, viewer, form, broadcast=broadcast,
                               outcome=Outcome(errors=validation_errors(tr, err), status=422))
    if broadcast is None:
        outcome = await call_api(api.create_broadcast, request, viewer, body=body)
    else:
        outcome = await call_api(api.edit_broadcast, request, viewer, broadcast_id=broadcast.id, body=body)
    if outcome.saved is not None:
        return RedirectResponse(f"/broadcasts/{outcome.saved.broadcast.id}?done=saved", status_code=303)
    notes = [tr("form.changed")] if wants_save and not reviewed and not outcome.errors else []
    return await form_page(request, viewer, form, broadcast=broadcast, outcome=outcome, notes=notes)


async def _to_edit(request: Request, broadcast_id: int) -> Response | tuple[Any, Broadcast]:
    """The viewer (who may change) and the broadcast, or the answer that says why not."""
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    broadcast = await Broadcast.get_or_none(id=broadcast_id)
    if broadcast is None:
        return notice(request, viewer, "error.no_broadcast", 404, id=broadcast_id)
    return viewer, broadcast


@router.get("/broadcasts/{broadcast_id:int}/edit", response_class=HTMLResponse)
async def edit_page(request: Request, broadcast_id: RowId) -> Response:
    found = await _to_edit(request, broadcast_id)
    if isinstance(found, Response):
        return found
    viewer, broadcast = found
    if broadcast.status != BroadcastStatus.ACTIVE:
        return notice(request, viewer, "error.cancelled", 409, id=broadcast_id)
    return await form_page(request, viewer, BroadcastForm.of(broadcast), broadcast=broadcast)


@router.post("/broadcasts/{broadcast_id:int}/edit", response_class=HTMLResponse)
async def edit_submit(request: Request, broadcast_id: RowId) -> Response:
    found = await _to_edit(request, broadcast_id)
    if isinstance(found, Response):
        return found
    return await form_submit(request, found[0], found[1])


# -- one broadcast -----------------------------------------------------------------------------


async def detail_page(request: Request, viewer: Principal, broadcast_id: int, *, done: str | None = None,
                      outcome: Outcome | None = None, occurrence: datetime | None = None) -> Response:
    tr = words_of(request)
    try:
        shown = await read_api(api.get_broadcast, request, viewer, broadcast_id=broadcast_id, next_=NEXT_SHOWN)
    except HTTPException:
        return notice(request, viewer, "error.no_broadcast", 404, id=broadcast_id)
    broadcast = await Broadcast.get(id=broadcast_id)
    versions = await read_api(api.broadcast_versions, request, viewer, broadcast_id=broadcast_id)
    clip = await Clip.get_or_none(id=shown.clip_id)
    facts = [
        (tr("field.level"), tr(f"level.{shown.level.value}")),
        (tr("field.clip"), f"{clip.title} (#{clip.id})" if clip else f"#{shown.clip_id}"),
        (tr("field.targets"), targets_text(tr, shown.targets)),
        (tr("field.start"), f"{tr.when(datetime.fromisoformat(shown.start_local))} ({shown.timezone})"),
        (tr("field.recurrence"), timing_text(tr, broadcast)),
        (tr("field.order"), str(shown.order)),
        (tr("detail.created"), tr("detail.by", at=tr.at(shown.created_at),
                                  who=shown.created_by)),
        (tr("detail.updated"), tr("detail.by", at=tr.at(shown.updated_at),
                                  who=shown.updated_by)),
    ]
    if shown.repeat_of:
        facts.append((tr("detail.repeat_of"), f"#{shown.repeat_of}"))
    dispatch = await (EmergencyDispatch.filter(broadcast_id=broadcast_id).annotate(n=Count("id"))
                      .group_by("state").order_by("state").values_list("state", "n"))
    return page(request, "broadcast_detail.html", {
        "viewer": viewer, "b": shown, "facts": facts, "may_change": may_broadcast(viewer),
        "next": [tr.at(o.local) for o in shown.next],
        "versions": [{"v": v, "at": tr.at(v.created_at),
                      "summary": _version_summary(tr, v.definition)} for v in reversed(versions)],
        "done": done if done in DONE else None, "errors": outcome.errors if outcome else [],
        "review": review_view(tr, outcome.review if outcome else None), "clip_deleted": bool(clip and clip.deleted_at),
        "dispatch": [(str(state), int(n)) for state, n in dispatch],
        **await receipts_view(request, tr, viewer, broadcast_id, occurrence),
    }, outcome.status if outcome and outcome.errors else 200)


def _version_summary(tr: Words, definition: dict[str, Any]) -> str:
    start = definition.get("start")
    parts = [str(definition.get("title", "")), tr(f"level.{definition.get('level', 'normal')}")]
    if isinstance(start, str):
        parts.append(tr.when(datetime.fromisoformat(start)))
    if definition.get("rrule"):
        parts.append(str(definition["rrule"]))
    return " · ".join(parts)


async def receipts_view(request: Request, tr: Words, viewer: Principal, broadcast_id: int,
                        occurrence: datetime | None) -> dict[str, Any]:
    """The delivery summary and one occurrence's receipts per speaker, from the API's receipt routes
    (fleet/api/routes/receipts.py): the occurrence asked for, else the latest that has receipts."""
    summary = await read_api(receipt_api.receipts_summary, request, viewer, broadcast_id=broadcast_id)
    if not summary.total:
        return {"summary": None}
    starts: list[datetime] = [o.occurrence_at for o in summary.occurrences]
    chosen: datetime = occurrence if occurrence is not None and occurrence in starts else max(starts)
    listing = Response()
    rows = await read_api(receipt_api.list_receipts, request, viewer, broadcast_id=broadcast_id, response=listing,
                          occurrence=chosen, state=None, device=None, limit=RECEIPTS_SHOWN, offset=0)
    return {"summary": summary, "chosen": chosen, "chosen_at": tr.at(chosen),
            "occurrences": [{"o": o, "at": tr.at(o.occurrence_at), "key": o.occurrence_at.isoformat()}
                            for o in reversed(summary.occurrences[-OCCURRENCES_SHOWN:])],
            "receipts": [{"r": r, "started": tr.at(r.started_at, seconds=True) if r.started_at else "",
                          "reason": r.reason or ""} for r in rows],
            "receipts_total": int(listing.headers.get(receipt_api.TOTAL_HEADER, len(rows))),
            "csv": f"/api/broadcasts/{broadcast_id}/receipts.csv",
            "csv_occurrence": f"/api/broadcasts/{broadcast_id}/receipts.csv?" + urlencode(
                {"occurrence": chosen.isoformat()})}


@router.get("/broadcasts/{broadcast_id:int}", response_class=HTMLResponse)
async def broadcast_page(request: Request, broadcast_id: RowId,
                         done: Annotated[str | None, Query(max_length=20)] = None,
                         occurrence: Annotated[datetime | None, Query()] = None) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    if occurrence is not None and occurrence.tzinfo is None:
        occurrence = occurrence.replace(tzinfo=UTC)
    return await detail_page(request, viewer, broadcast_id, done=done,
                             occurrence=occurrence.astimezone(UTC) if occurrence else None)


@router.post("/broadcasts/{broadcast_id:int}/cancel", response_class=HTMLResponse)
async def cancel_submit(request: Request, broadcast_id: RowId) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    outcome = await call_api(api.cancel_broadcast, request, viewer, broadcast_id=broadcast_id)
    if outcome.saved is not None:
        return RedirectResponse(f"/broadcasts/{broadcast_id}?done=cancelled", status_code=303)
    return await detail_page(request, viewer, broadcast_id, outcome=outcome)


@router.post("/broadcasts/{broadcast_id:int}/repeat", response_class=HTMLResponse)
async def repeat_submit(request: Request, broadcast_id: RowId) -> Response:
    """A one-off copy a minute from now; with conflicts, the review first and a confirmed second post."""
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    confirm = (await _form(request)).get("confirm", [""])[0] == "yes"
    outcome = await call_api(api.repeat_broadcast, request, viewer, broadcast_id=broadcast_id,
                             body=api.RepeatCreate(confirm=confirm))
    if outcome.saved is not None:
        return RedirectResponse(f"/broadcasts/{outcome.saved.broadcast.id}?done=repeated", status_code=303)
    return await detail_page(request, viewer, broadcast_id, outcome=outcome)
