"""The status page at `/`: who is online, who is not, what the ingest is doing."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from fleet.api.deps import (
    SESSION_COOKIE,
    RuntimeDep,
    guards_of,
    open_session,
    record_locks,
    set_session_cookie,
    source_of,
)
from fleet.auth import audit
from fleet.auth.people import AuthError, Principal, principal_for, redeem_login_link
from fleet.auth.roles import Permission
from fleet.auth.throttle import Throttled
from fleet.models import Device, DeviceStatus, SeqGap

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


def _state(device: Device, now: datetime, stale_after_periods: int) -> str:
    """One word for a row: decommissioned, offline, stale (online, health overdue), online, never seen."""
    if device.status == DeviceStatus.DECOMMISSIONED:
        return "decommissioned"
    if device.session is None:
        return "never seen"
    if not device.online:
        return "offline"
    period = (device.birth or {}).get("period_s") or 60
    last = device.last_health_at or device.last_birth_at
    if last is not None and now - last > timedelta(seconds=period * stale_after_periods):
        return "stale"
    return "online"


def _health_summary(health: dict[str, Any] | None) -> str:
    if not health:
        return ""
    parts = []
    for key, label, unit in (("cpu_pct", "cpu", "%"), ("mem_pct", "mem", "%"), ("temp_c", "", "°C"),
                             ("heap_free", "heap", " B"), ("rssi", "rssi", " dBm"), ("queue", "queue", "")):
        if key in health:
            value = health[key]
            text = f"{value:.0f}" if isinstance(value, float) else str(value)
            parts.append(f"{label} {text}{unit}".strip())
    return " · ".join(parts)


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "—"
    seconds = int((now - moment).total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


async def _viewer(request: Request) -> Principal | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        principal = await principal_for(token)
    except AuthError:
        return None
    return principal if principal.may(Permission.READ) else None


def _session_response(token: str, request: Request) -> Response:
    response = RedirectResponse("/", status_code=303)
    set_session_cookie(response, token, request)
    return response


def _login_form(request: Request, error: str | None, status_code: int = 200,
                retry_after_s: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
    return templates.TemplateResponse(request, "login.html", {"error": error, "retry_after_s": retry_after_s},
                                      status_code=status_code, headers=headers)


async def _form(request: Request) -> dict[str, list[str]]:
    return parse_qs((await request.body()).decode(errors="replace"))


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    """The login form. A login link (`/login#code=…`) lands here too: the fragment never reaches
    the server (nor its access log); static/login-link.js POSTs it to /login/link."""
    return _login_form(request, None)


@router.post("/login/link", response_class=HTMLResponse)
async def login_link_redeem(request: Request) -> Response:
    """Redeem a one-time login link (POST /api/auth/login-link): once, within its 60 s."""
    source = source_of(request)
    guards = guards_of(request)
    refusal = guards.check_secret(source)
    if refusal is not None:
        err = Throttled(refusal)
        return _login_form(request, f"{err}.", 429, refusal.retry_after_s)
    try:
        token, _, user = await redeem_login_link((await _form(request)).get("code", [""])[0])
    except AuthError:
        lock = guards.secrets.failed(source)
        await audit.record("login-link", "auth.login.link.refused", "", None, source)
        await record_locks("login-link", "auth.secrets.throttled", [lock] if lock else [], source)
        return _login_form(request, "That login link is not valid (used, expired or unknown).", 401)
    await audit.record(user.username, "auth.login.link", "", None, source)
    return _session_response(token, request)


@router.post("/login", response_class=HTMLResponse)
async def login_submit(request: Request) -> Response:
    form = await _form(request)
    username = form.get("username", [""])[0]
    try:
        token, _ = await open_session(request, username, form.get("password", [""])[0])
    except Throttled as err:
        return _login_form(request, f"{err}.", 429, err.refusal.retry_after_s)
    except AuthError as err:
        return _login_form(request, str(err), 401)
    return _session_response(token, request)


@router.get("/", response_class=HTMLResponse)
async def status_page(request: Request, runtime: RuntimeDep) -> Response:
    viewer = await _viewer(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    now = datetime.now(UTC)
    devices = await Device.all().order_by("ward", "id")
    open_gaps: dict[str, int] = {}
    for gap in await SeqGap.filter(open=True).only("device_id"):
        open_gaps[gap.device_id] = open_gaps.get(gap.device_id, 0) + 1
    rows = []
    counts = {"online": 0, "stale": 0, "offline": 0, "never seen": 0, "decommissioned": 0}
    for device in devices:
        state = _state(device, now, runtime.settings.stale_after_periods)
        counts[state] += 1
        rows.append({
            "device": device,
            "state": state,
            "health": _health_summary(device.last_health),
            "seen": _ago(device.last_seen_at, now),
            "gaps": open_gaps.get(device.id, 0),
        })
    stats = runtime.stats.as_dict(runtime.link.depth())
    return templates.TemplateResponse(request, "status.html", {
        "rows": rows, "counts": counts, "total": len(devices), "stats": stats, "now": now, "viewer": viewer,
    })

