"""The login pages, and what the ops pages (fleet/web/ops_pages.py: the overview at `/`, a device at
`/devices/{id}`) share: the templates, the viewer, the broker banner, a device's verdict in words."""

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from fleet.api.deps import (
    SESSION_COOKIE,
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
from fleet.ingest.health import ingest_health
from fleet.ingest.silence import LivenessView
from fleet.liveness import Reason, State, Verdict
from fleet.runtime import Runtime
from fleet.web import i18n

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
i18n.install(templates.env)  # the nav and the broadcast pages: t(key) from the catalogue
templates.env.globals["may_broadcast"] = (  # the nav's emergency link
    lambda viewer: isinstance(viewer, Principal) and viewer.may(Permission.BROADCAST))
router = APIRouter(include_in_schema=False)

REASONS = {
    Reason.LOST: "connection lost (the broker sent its will)",
    Reason.SHUTDOWN: "shut down",
    Reason.SILENT: "silent: nothing heard for {n} health periods",
    Reason.OVERDUE: "nothing heard for {n} health periods",
    Reason.FLEET_DISCONNECTED: "the fleet does not hear the broker",
}


def _reason_text(verdict: Verdict, view: LivenessView) -> str:
    if verdict.reason is None:
        return ""
    periods = (view.timing.stale_after_periods if verdict.reason is Reason.OVERDUE
               else view.timing.silent_after_periods)
    return REASONS[verdict.reason].format(n=periods)


def _words(state: State) -> str:
    return state.value.replace("_", " ")


def _banner(runtime: Runtime, view: LivenessView) -> list[str]:
    """What keeps the fleet from hearing its devices, one line each; empty while it hears them."""
    if view.hearing.listening:
        return []
    problems = ingest_health(runtime.link, runtime.supervisor, runtime.stats)["problems"]
    return [str(p) for p in problems] or ["the fleet is waiting for its first probe to come back through the broker"]


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


async def viewer_of(request: Request) -> Principal | None:
    """The logged-in person who may read, from the session cookie; None otherwise (pages redirect)."""
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
