"""What the broadcast, emergency and audio pages share: the catalogue's words and the fleet's
wall clock, the page and notice answers, who may see and change, the outcome of an API route
function called by a page, the review (dry run) as a page shows it, and the form's choices."""

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from fleet.api.deps import Auditor, get_runtime
from fleet.api.routes.audio import library_of
from fleet.api.routes.broadcasts import calendar_of
from fleet.auth.people import Principal
from fleet.auth.roles import Permission
from fleet.broadcast.calendar import SPEAKER_ROLE
from fleet.broadcast.models import Broadcast, Clip
from fleet.models import Device, DeviceStatus
from fleet.web.broadcast_form import recurrence_of
from fleet.web.i18n import language_of, translate
from fleet.web.pages import templates, viewer_of

CLIPS_LISTED = 500  # clips offered by the forms, newest first
SPEAKERS_LISTED = 5000  # speakers offered by the pickers


@dataclass(frozen=True, slots=True)
class Words:
    """The catalogue in the request's language, and times on the wall clock of the fleet's zone."""

    lang: str
    tz: ZoneInfo

    def __call__(self, key: str, **params: Any) -> str:
        return translate(self.lang, key, **params)

    def when(self, local: datetime) -> str:
        """A wall-clock time as a person reads it: weekday, date, hour and minute."""
        return self("fmt.datetime", dow=self(f"day.short.{local.weekday()}"), day=local.day, month=local.month,
                    year=local.year, hour=local.hour, minute=local.minute)

    def at(self, instant: datetime | str, *, seconds: bool = False) -> str:
        """An instant (aware, or ISO text with an offset) on the zone's wall clock."""
        moment = datetime.fromisoformat(instant) if isinstance(instant, str) else instant
        local = moment.astimezone(self.tz)
        if seconds:
            return self("fmt.datetime_s", dow=self(f"day.short.{local.weekday()}"), day=local.day,
                        month=local.month, year=local.year, hour=local.hour, minute=local.minute, second=local.second)
        return self.when(local.replace(tzinfo=None))


def words_of(request: Request) -> Words:
    return Words(language_of(request), calendar_of(request).tz)


def timing_text(tr: Words, broadcast: Broadcast) -> str:
    """How a broadcast recurs, in words."""
    recurrence, days, raw = recurrence_of(broadcast.rrule)
    if recurrence == "weekly":
        text = tr("rec.weekly_on", days=", ".join(tr(f"weekday.{d}") for d in days))
    elif recurrence == "rrule":
        text = tr("rec.rule", rule=raw)
    else:
        text = tr(f"rec.{recurrence}")
    if broadcast.until:
        text += " · " + tr("rec.until", date=broadcast.until)
    if broadcast.count is not None:
        text += " · " + tr("rec.count", n=broadcast.count)
    if broadcast.exceptions:
        text += " · " + tr("rec.except", dates=", ".join(broadcast.exceptions))
    return text


def targets_text(tr: Words, targets: dict[str, list[str]]) -> str:
    parts = [tr(f"targets.{kind}", names=", ".join(names)) for kind in ("wards", "tags", "devices")
             if (names := targets.get(kind))]
    return " · ".join(parts)


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def may_broadcast(viewer: Principal) -> bool:
    return viewer.may(Permission.BROADCAST)


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """A page of this module: the catalogue's language and its lang attribute."""
    return templates.TemplateResponse(request, name, {"page_lang": language_of(request), **context},
                                      status_code=status_code)


def notice(request: Request, viewer: Principal, key: str, status_code: int, **params: Any) -> Response:
    """A page that only says why not (404, 403, …), with a way back."""
    return page(request, "notice.html", {"viewer": viewer, "message": words_of(request)(key, **params)},
                status_code)


async def guarded(request: Request, change: bool = False) -> Principal | Response:
    """The viewer, or the answer for who may not see (login) or change (403) this."""
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    if change and not may_broadcast(viewer):
        return notice(request, viewer, "error.role", 403, role=viewer.role.value)
    return viewer


# -- results of the API's route functions ------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What an API route function answered, for a page."""

    saved: Any = None  # the route's model (BroadcastSaved, BroadcastPublic, …)
    review: dict[str, Any] | None = None  # ReviewPublic as JSON: a dry run, or the conflicts of a 409
    errors: list[str] = field(default_factory=list)
    status: int = 200


def route_arguments(route: Callable[..., Any], request: Request, viewer: Principal, **values: Any) -> dict[str, Any]:
    """The arguments FastAPI would give an API route function, for a page's request: the request,
    the runtime, the calendar, the library, the acting person's Auditor (the page checked the role),
    the reader (`_`), and the page's `values` (body, ids). By name, so a route that takes one more of
    these dependencies later is still called as the API calls it."""
    made: dict[str, Callable[[], Any]] = {  # made only for a route that takes them (the library makes its folder)
        "request": lambda: request, "runtime": lambda: get_runtime(request), "calendar": lambda: calendar_of(request),
        "library": lambda: library_of(request), "audit": lambda: Auditor(request, viewer), "_": lambda: viewer}
    wanted = inspect.signature(route).parameters
    missing = [name for name, p in wanted.items()
               if name not in values and name not in made and p.default is inspect.Parameter.empty]
    if missing:
        raise TypeError(f"{route.__name__}: the pages do not provide {', '.join(missing)}")
    return {name: values[name] if name in values else made[name]() for name in wanted
            if name in values or name in made}


async def read_api(route: Callable[..., Awaitable[Any]], request: Request, viewer: Principal, **values: Any) -> Any:
    """What an API route function answers (HTTPException as it raises it)."""
    return await route(**route_arguments(route, request, viewer, **values))


async def call_api(route: Callable[..., Awaitable[Any]], request: Request, viewer: Principal,
                   **values: Any) -> Outcome:
    """An API route function's answer for a page: saved, a review, or the refusal's reason."""
    try:
        result = await read_api(route, request, viewer, **values)
    except HTTPException as err:
        return Outcome(errors=[str(err.detail)], status=err.status_code)
    if isinstance(result, JSONResponse):
        data = json.loads(bytes(result.body))
        if result.status_code == 409:
            return Outcome(review=data["review"], errors=[str(data["detail"])], status=409)
        return Outcome(review=data, status=result.status_code)
    return Outcome(saved=result)


def validation_errors(tr: Words, err: ValidationError) -> list[str]:
    shown = []
    for problem in err.errors()[:10]:
        where = [str(part) for part in problem["loc"] if not isinstance(part, int)]
        label = tr(f"field.{where[0]}") if where else ""
        shown.append(f"{label}: {problem['msg']}" if label else str(problem["msg"]))
    return shown


def review_view(tr: Words, review: dict[str, Any] | None) -> dict[str, Any] | None:
    """The review (dry run or 409) as the page shows it: times on the wall clock, winners in words."""
    if review is None:
        return None
    conflicts = []
    for c in review["conflicts"]:
        reason = tr(f"reason.{c['reason']}")
        conflicts.append({**c, "winner_text": tr(f"review.wins.{c['winner']}", reason=reason),
                          "at": tr.at(c["start"])})
    return {"occurrences": [tr.at(o["local"]) for o in review["occurrences"]],
            "speakers": review["speakers"], "quiet": [{"at": tr.at(q["start"]), "speakers": q["speakers"]}
                                                      for q in review["quiet"]],
            "conflicts": conflicts, "conflicts_total": review["conflicts_total"]}


# -- what the form offers ----------------------------------------------------------------------


@dataclass(slots=True)
class Choices:
    clips: list[Clip]
    wards: list[tuple[str, int]]  # (ward, its speakers)
    tags: list[str]
    speakers: list[tuple[str, str]]  # (id, ward)


async def choices() -> Choices:
    """The clips of the library, and the wards, tags and speakers there are to target (the same
    speakers the calendar's target resolution finds: alive devices whose birth lists `speaker`)."""
    clips = await Clip.filter(deleted_at__isnull=True).order_by("-id").limit(CLIPS_LISTED)
    rows = await (Device.exclude(status=DeviceStatus.DECOMMISSIONED).order_by("ward", "id")
                  .limit(SPEAKERS_LISTED).values_list("id", "ward", "tags", "roles"))
    wards: dict[str, int] = {}
    tags: set[str] = set()
    speakers = []
    for device_id, ward, device_tags, roles in rows:
        if not isinstance(roles, list) or SPEAKER_ROLE not in roles:
            continue
        speakers.append((str(device_id), str(ward)))
        if ward:
            wards[str(ward)] = wards.get(str(ward), 0) + 1
        tags.update(str(t) for t in device_tags or [])
    return Choices(list(clips), sorted(wards.items()), sorted(tags), speakers)


