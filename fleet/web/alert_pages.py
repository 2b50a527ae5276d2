"""The alerts for ops staff (docs/ops.md, "Alert pages"): `/alerts` (the live ones first, by severity,
grouped per ward and per device, with filters) and `/alerts/{id}` (its facts and history; acknowledge,
silence until a time, unsilence, resolve). Changes call the API's own route functions
(fleet/api/routes/ops_alerts.py, through fleet/web/broadcast_kit.call_api: the same checks, lifecycle
and audit, the viewer as the actor), so a page does what the API does; they need Permission.ALERTS, reading READ.
The forms are POSTs that fleet.api.csrf's CrossSiteGuard lets through only from the fleet's own pages."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from tortoise.expressions import Case, Q, When

from fleet.api.deps import RowId
from fleet.api.routes import ops_alerts as api
from fleet.auth.people import Principal
from fleet.auth.roles import Permission
from fleet.ops import alerts as lifecycle
from fleet.ops.models import Alert, AlertState, Severity
from fleet.ops.rules import KINDS
from fleet.web.broadcast_kit import call_api
from fleet.web.pages import _ago, _form, templates, viewer_of

router = APIRouter(include_in_schema=False)
PAGE = 100  # alerts a page of /alerts
GROUPS_SHOWN = 12  # wards and devices in the group panels
STATE_CHOICES = ("live", "open", "acknowledged", "resolved", "all")  # live: open or acknowledged
DONE = {"acknowledged": "Acknowledged.", "silenced": "Silenced.", "unsilenced": "Silence lifted.",
        "resolved": "Resolved.", "saved": "Saved.", "created": "Created."}
SILENCE_CHOICES = ((1, "1 hour"), (4, "4 hours"), (8, "8 hours"), (24, "1 day"), (72, "3 days"), (168, "7 days"))


# -- shared by the ops pages (alerts, rules, channels) -------------------------------------------

def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def refusal(request: Request, viewer: Principal, message: str, status_code: int) -> Response:
    return page(request, "ops_notice.html", {"viewer": viewer, "message": message}, status_code)


async def guarded(request: Request, change: bool = False) -> Principal | Response:
    """The viewer; or the login page for nobody; or a 403 page for a change by who may not (ALERTS)."""
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    if change and not viewer.may(Permission.ALERTS):
        return refusal(request, viewer, f"The role {viewer.role.value} may look at alerts, rules and channels "
                                        "but not change them (ops and admin may).", 403)
    return viewer


def zone_of(request: Request) -> ZoneInfo:
    """The city's wall clock (FLEET_TIMEZONE), for times people type and read."""
    return ZoneInfo(request.app.state.runtime.settings.timezone)


def done_of(done: str | None) -> str | None:
    return DONE.get(done or "")


# -- the list --------------------------------------------------------------------------------------

def _ranked(query: Any) -> Any:
    """Open first, then acknowledged, then resolved; by severity (critical first); newest raised first."""
    state_rank = Case(When(Q(state=AlertState.OPEN), then="0"), When(Q(state=AlertState.ACKNOWLEDGED), then="1"),
                      default="2")
    severity_rank = Case(*(When(Q(severity=s), then=str(i)) for i, s in enumerate(Severity)), default="9")
    return query.annotate(state_rank=state_rank, severity_rank=severity_rank).order_by(
        "state_rank", "severity_rank", "-raised_at", "-id")


def alert_row(alert: Alert, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    silenced = lifecycle.silenced(alert, now)
    return {"a": alert, "raised": _ago(alert.raised_at, now), "silenced": silenced,
            "until": f"{alert.silenced_until.astimezone(tz):%Y-%m-%d %H:%M}" if silenced and alert.silenced_until
            else ""}


@router.get("/alerts", response_class=HTMLResponse)
async def alerts_page(request: Request,
                      state: Annotated[str, Query(max_length=16)] = "live",
                      severity: Annotated[str, Query(max_length=16)] = "",
                      ward: Annotated[str, Query(max_length=80)] = "",
                      device: Annotated[str, Query(max_length=63)] = "",
                      kind: Annotated[str, Query(max_length=32)] = "",
                      offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    errors = []
    if state not in STATE_CHOICES:
        errors.append(f"state must be one of {', '.join(STATE_CHOICES)}")
        state = "live"
    if severity and severity not in {s.value for s in Severity}:
        errors.append(f"severity must be one of {', '.join(s.value for s in Severity)}")
        severity = ""
    query = Alert.all()
    if state == "live":
        query = query.filter(live_key__isnull=False)
    elif state != "all":
        query = query.filter(state=state)
    for field, value in (("severity", severity), ("ward", ward), ("device_id", device), ("kind", kind)):
        if value:
            query = query.filter(**{field: value})
    rows = await _ranked(query).offset(offset).limit(PAGE)
    total = offset + len(rows) if 0 < len(rows) < PAGE else await query.count()
    by_ward, wards_total = await lifecycle.groups("ward", GROUPS_SHOWN)
    by_device, devices_total = await lifecycle.groups("device", GROUPS_SHOWN)
    now, tz = datetime.now(UTC), zone_of(request)
    chosen = {"state": state, "severity": severity, "ward": ward, "device": device, "kind": kind}

    def at(new_offset: int) -> str:
        return "/alerts?" + urlencode({**{k: v for k, v in chosen.items() if v}, "offset": new_offset})

    return page(request, "alerts.html", {
        "viewer": viewer, "rows": [alert_row(a, now, tz) for a in rows], "total": total, "offset": offset,
        "prev": at(max(offset - PAGE, 0)) if offset else None,
        "next": at(offset + PAGE) if offset + len(rows) < total else None,
        "by_ward": by_ward, "wards_total": wards_total, "by_device": by_device, "devices_total": devices_total,
        "chosen": chosen, "states": STATE_CHOICES, "severities": [s.value for s in Severity], "errors": errors,
        "kinds": sorted(KINDS), "now": now, "zone": tz.key,
    }, 422 if errors else 200)


# -- one alert -------------------------------------------------------------------------------------

async def alert_page(request: Request, viewer: Principal, alert_id: int, *, done: str | None = None,
                     error: str | None = None, status_code: int = 200) -> Response:
    try:
        alert, events = await lifecycle.get_alert(alert_id)
    except lifecycle.AlertNotFound:
        return refusal(request, viewer, f"No alert #{alert_id}.", 404)
    now, tz = datetime.now(UTC), zone_of(request)
    row = alert_row(alert, now, tz)

    def when(moment: datetime | None, who: str | None = None) -> str:
        if moment is None:
            return "—"
        text = f"{moment.astimezone(tz):%Y-%m-%d %H:%M:%S} ({_ago(moment, now)})"
        return text + (f" by {who}" if who else "")

    facts = [("Device", alert.device_id), ("Ward", alert.ward or "—"), ("Rule", f"#{alert.rule_id} · {alert.kind}"),  # type: ignore[attr-defined]
             ("Severity", alert.severity.value), ("State", alert.state.value),
             ("Raised", when(alert.raised_at)), ("Condition last true", when(alert.last_true_at)),
             ("Times it came back", str(alert.count - 1)),
             ("Acknowledged", when(alert.acknowledged_at, alert.acknowledged_by)),
             ("Silenced until", when(alert.silenced_until, alert.silenced_by) if row["silenced"] else "—"),
             ("Resolved", when(alert.resolved_at, alert.resolved_by or ("the rule (cleared)" if alert.resolved_at
                                                                        else None)))]
    default_until = (now + timedelta(hours=4)).astimezone(tz)
    return page(request, "alert.html", {
        "viewer": viewer, "alert": alert, "row": row, "facts": facts, "done": done_of(done), "error": error,
        "may_change": viewer.may(Permission.ALERTS), "zone": tz.key,
        "until_default": f"{default_until:%Y-%m-%dT%H:%M}", "silence_choices": SILENCE_CHOICES,
        "events": [{"e": e, "at": f"{e.at.astimezone(tz):%Y-%m-%d %H:%M:%S}", "ago": _ago(e.at, now),
                    "actor": e.actor or "rule engine", "detail": _detail(e.detail)} for e in events],
        "value": _detail(alert.value),
    }, status_code)


def _detail(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return " · ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
async def alert_detail(request: Request, alert_id: RowId,
                       done: Annotated[str | None, Query(max_length=20)] = None) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    return await alert_page(request, viewer, alert_id, done=done)


async def _change(request: Request, alert_id: int, route: Callable[..., Awaitable[Any]], done: str,
                  **values: Any) -> Response:
    """Who may; the API's own route function called (its checks, its audit); a refusal shown on the page."""
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    outcome = await call_api(route, request, viewer, alert_id=alert_id, **values)
    if outcome.errors:
        if outcome.status == 404:
            return refusal(request, viewer, outcome.errors[0], 404)
        return await alert_page(request, viewer, alert_id, error="; ".join(outcome.errors),
                                status_code=outcome.status)
    return RedirectResponse(f"/alerts/{alert_id}?done={done}", status_code=303)


@router.post("/alerts/{alert_id}/ack", response_class=HTMLResponse)
async def acknowledge_submit(request: Request, alert_id: RowId) -> Response:
    return await _change(request, alert_id, api.acknowledge, "acknowledged")


@router.post("/alerts/{alert_id}/unsilence", response_class=HTMLResponse)
async def unsilence_submit(request: Request, alert_id: RowId) -> Response:
    return await _change(request, alert_id, api.unsilence, "unsilenced")


@router.post("/alerts/{alert_id}/resolve", response_class=HTMLResponse)
async def resolve_submit(request: Request, alert_id: RowId) -> Response:
    return await _change(request, alert_id, api.resolve, "resolved")


def silence_end(form: dict[str, list[str]], tz: ZoneInfo, now: datetime) -> datetime | str:
    """The silence's end from the form: `hours` from now, else `until` on the city's wall clock."""
    hours = form.get("hours", [""])[0]
    if hours:
        if hours not in {str(h) for h, _ in SILENCE_CHOICES}:
            return "choose one of the offered durations"
        return now + timedelta(hours=int(hours))
    text = form.get("until", [""])[0].strip()
    try:
        local = datetime.fromisoformat(text)
    except ValueError:
        return "the silence's end must be a date and time (YYYY-MM-DDTHH:MM)"
    return local.replace(tzinfo=tz) if local.tzinfo is None else local


@router.post("/alerts/{alert_id}/silence", response_class=HTMLResponse)
async def silence_submit(request: Request, alert_id: RowId) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    until = silence_end(await _form(request), zone_of(request), datetime.now(UTC))
    if isinstance(until, str):
        return await alert_page(request, viewer, alert_id, error=until, status_code=422)
    return await _change(request, alert_id, api.silence, "silenced", body=api.SilenceBody(until=until))
