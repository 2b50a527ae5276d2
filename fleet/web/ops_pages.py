"""The ops overview at `/` (problems first) and one device's page at `/devices/{id}` (docs/ops.md,
"Dashboard"). Every count is a grouped query and every list a page of rows, so neither page loads
the device table; the state of a device is fleet.liveness's verdict (in SQL: LivenessView.filter)."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from tortoise.expressions import Case, Q, Subquery, When
from tortoise.functions import Count
from tortoise.queryset import QuerySet

from fleet.api.deps import DeviceId, RuntimeDep
from fleet.api.routes.device_history import HistoryRefused, check_range
from fleet.assets.service import asset_of_device
from fleet.children.queries import children_of
from fleet.device_queries import open_gaps
from fleet.ingest.silence import LivenessView
from fleet.liveness import State
from fleet.models import Command, Device, DeviceCredential, EventRecord, HealthRecord, SeqGap
from fleet.ops import history
from fleet.ops.models import Alert, AlertState, Severity
from fleet.web import charts
from fleet.web.pages import _ago, _banner, _health_summary, _reason_text, _words, templates, viewer_of

router = APIRouter(include_in_schema=False)

DEVICES_PAGE = 50  # rows of the overview's device list
PROBLEMS_PAGE = 25  # offline and stale devices per page
ALERTS_PAGE = 20  # open alerts per page
FIRMWARE_ROWS = 30  # versions in the field, most common first
WARD_ROWS = 200  # wards (the city has 9); more are cut with a note
RECENT_ROWS = 20  # events, commands, health reports on a device's page
RESOLVED_ALERTS = 10  # a device's resolved alerts shown below its live ones
CHART_POINTS = 180  # buckets per chart: about 4 px each
HEALTH_CHARTS = 8
TELEMETRY_CHARTS = 4  # per role
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
PREFERRED = ("temp_c", "cpu_pct", "mem_pct", "disk_pct", "heap_free", "rssi", "queue", "dropped")
UNITS = {"temp_c": "°C", "rssi": " dBm", "heap_free": " B"}
SEVERITIES = list(Severity)


@dataclass(frozen=True)
class Pager:
    number: int  # from 1
    size: int
    total: int
    param: str
    base: dict[str, str]  # the page's other query parameters

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    def url(self, number: int) -> str:
        return "?" + urlencode({**self.base, self.param: str(number)}) + f"#{self.param}"

    @property
    def prev_url(self) -> str | None:
        return self.url(self.number - 1) if self.number > 1 else None

    @property
    def next_url(self) -> str | None:
        return self.url(self.number + 1) if self.number < self.pages else None


def _pager(request: Request, param: str, size: int, total: int) -> Pager:
    try:
        number = max(1, int(request.query_params.get(param, "1")))
    except ValueError:
        number = 1
    base = {k: v for k, v in request.query_params.items() if k != param}
    pager = Pager(number, size, total, param, base)
    return pager if number <= pager.pages else Pager(pager.pages, size, total, param, base)


def _ids(query: QuerySet[Device]) -> Subquery:
    return Subquery(query.values("id"))


def _row(device: Device, view: LivenessView, now: datetime, gaps: int = 0) -> dict[str, Any]:
    verdict = view.judge(device)
    return {"device": device, "state": verdict.state.value.replace("_", "-"), "words": _words(verdict.state),
            "why": _reason_text(verdict, view), "health": _health_summary(device.last_health),
            "seen": _ago(device.last_seen_at, now), "gaps": gaps}


async def _grouped(query: QuerySet[Any], *by: str) -> list[tuple[Any, ...]]:
    return list(await query.annotate(n=Count("id")).group_by(*by).values_list(*by, "n"))


async def _alert_summary(request: Request) -> tuple[dict[str, int], list[Alert], Pager]:
    live = Alert.filter(~Q(state=AlertState.RESOLVED))
    by_severity = {str(s): int(n) for s, n in await _grouped(live, "severity")}
    pager = _pager(request, "ap", ALERTS_PAGE, sum(by_severity.values()))
    # severity's rank as text ("0" critical .. "3" warning): both databases order it the same way
    rank = Case(*(When(severity=s.value, then=str(i)) for i, s in enumerate(SEVERITIES)),
                default=str(len(SEVERITIES)))
    alerts = await live.annotate(rank=rank).order_by("rank", "-raised_at", "-id").offset(pager.offset) \
        .limit(pager.size)
    return {s.value: by_severity.get(s.value, 0) for s in SEVERITIES}, alerts, pager


async def _wards(view: LivenessView) -> list[dict[str, Any]]:
    totals = await _grouped(Device.all(), "ward")
    per_state = {state: dict(await _grouped(view.filter(Device.all(), state), "ward"))
                 for state in (State.ONLINE, State.STALE, State.OFFLINE)}
    rows = [{"ward": ward, "total": n, **{s.value: int(per_state[s].get(ward, 0)) for s in per_state}}
            for ward, n in totals]
    return sorted(rows, key=lambda r: (-(r["offline"] + r["stale"]), str(r["ward"])))[:WARD_ROWS]


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, runtime: RuntimeDep,
                   state_: str = Query("", alias="state", max_length=16),
                   ward: str = Query("", max_length=80), kind: str = Query("", max_length=16)) -> Response:
    """Problems first: open alerts by severity, offline and stale devices; then counts by ward,
    kind and firmware, and every device a page at a time (filtered by state, ward or kind)."""
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    view = LivenessView.of(runtime.link, runtime.settings)
    now = view.now
    counts = {s.value: await view.filter(Device.all(), s).count() for s in State}
    severities, alerts, alert_pager = await _alert_summary(request)

    problems = Device.filter(Q(id__in=_ids(view.filter(Device.all(), State.OFFLINE)))
                             | Q(id__in=_ids(view.filter(Device.all(), State.STALE))))
    problem_pager = _pager(request, "pp", PROBLEMS_PAGE, counts["offline"] + counts["stale"])
    problem_devices = await problems.order_by("ward", "id").offset(problem_pager.offset).limit(problem_pager.size)

    state = State(state_) if state_ in {s.value for s in State} else None  # the form's "any" is empty
    listed = Device.all()
    if state is not None:
        listed = view.filter(listed, state)
    if ward:
        listed = listed.filter(ward=ward)
    if kind:
        listed = listed.filter(kind=kind)
    device_pager = _pager(request, "p", DEVICES_PAGE, await listed.count())
    devices = await listed.order_by("ward", "id").offset(device_pager.offset).limit(device_pager.size)
    gaps = await open_gaps([d.id for d in devices])

    kinds = sorted(((k or "?", int(n)) for k, n in await _grouped(Device.all(), "kind")), key=lambda r: -r[1])
    firmware = sorted(((k or "?", f or "—", int(n)) for k, f, n in await _grouped(Device.all(), "kind", "fw")),
                      key=lambda r: (-r[2], r[0], r[1]))
    stats = runtime.stats.as_dict(runtime.link.depth())
    return templates.TemplateResponse(request, "overview.html", {
        "viewer": viewer, "now": now, "banner": _banner(runtime, view), "broker": runtime.broker_url,
        "counts": counts, "total": sum(counts.values()), "stats": stats,
        "severities": severities, "alerts": alerts, "alert_pager": alert_pager,
        "alert_ages": {a.id: _ago(a.raised_at, now) for a in alerts},
        "problems": [_row(d, view, now) for d in problem_devices], "problem_pager": problem_pager,
        "rows": [_row(d, view, now, gaps.get(d.id, 0)) for d in devices], "device_pager": device_pager,
        "filters": {"state": state.value if state else "", "ward": ward, "kind": kind},
        "wards": await _wards(view), "kinds": kinds, "firmware": firmware[:FIRMWARE_ROWS],
        "firmware_more": max(0, len(firmware) - FIRMWARE_ROWS), "states": [s.value for s in State],
    })


# -- one device ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    key: str  # 1h | 24h | 7d | 30d | custom
    start: datetime
    end: datetime
    local_from: str  # for the custom form, in the fleet's time zone
    local_to: str


def _window(key: str, start_text: str | None, end_text: str | None, now: datetime, tz: ZoneInfo) -> Window:
    """The chosen range; custom times are local (FLEET_TIMEZONE) as a datetime-local input sends them."""
    def local(moment: datetime) -> str:
        return moment.astimezone(tz).strftime("%Y-%m-%dT%H:%M")

    if key == "custom":
        try:
            start = datetime.fromisoformat(start_text or "").replace(tzinfo=tz).astimezone(UTC)
            end = datetime.fromisoformat(end_text or "").replace(tzinfo=tz).astimezone(UTC)
        except (ValueError, OverflowError):  # unreadable, or before year 1 once in UTC
            raise HistoryRefused("a custom range needs 'from' and 'to' as dates and times (years 1 to 9999)") from None
        check_range(start, end)
        return Window("custom", start, end, local(start), local(end))
    span = RANGES.get(key)
    if span is None:
        raise HistoryRefused("the range is one of 1h, 24h, 7d, 30d or custom")
    return Window(key, now - span, now, local(now - span), local(now))


def _chart_fields(found: list[str], limit: int) -> tuple[list[str], list[str]]:
    ordered = [f for f in PREFERRED if f in found] + [f for f in found if f not in PREFERRED]
    return ordered[:limit], ordered[limit:]


async def _charts(device: Device, window: Window, tz: ZoneInfo) -> tuple[list[dict[str, Any]], list[str]]:
    bucket = (window.end - window.start) / CHART_POINTS
    drawn: list[dict[str, Any]] = []
    left_out: list[str] = []
    plans: list[tuple[history.Source, str | None, list[str]]] = []
    shown, more = _chart_fields(await history.fields(device.id, "health"), HEALTH_CHARTS)
    plans.append(("health", None, shown))
    left_out += more
    for role in device.roles or []:
        shown, more = _chart_fields(await history.fields(device.id, "telemetry", role), TELEMETRY_CHARTS)
        plans.append(("telemetry", role, shown))
        left_out += [f"{role}: {f}" for f in more]
    for source, role, names in plans:
        for name in names:
            points = await history.series(device.id, source, name, window.start, window.end, CHART_POINTS, role)
            title = name if role is None else f"{role} · {name}"
            chart = charts.render(points, window.start, window.end, tz, title=title, unit=UNITS.get(name, ""),
                                  bucket=bucket)
            query = {"source": source, "field": name, "from": window.start.isoformat(),
                     "to": window.end.isoformat(), "points": CHART_POINTS, **({"role": role} if role else {})}
            drawn.append({"title": title, "source": source, "svg": chart.svg, "points": chart.drawn,
                          "api": f"/api/devices/{device.id}/history?{urlencode(query)}"})
    return drawn, left_out


def _pretty(value: Any, limit: int = 4000) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "\n…"


def _brief(value: Any, limit: int = 160) -> str:
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "…"


async def _credential(device_id: str, now: datetime) -> str:
    live = await DeviceCredential.filter(device_id=device_id, revoked_at__isnull=True) \
        .order_by("-created_at").first()
    revoked = await DeviceCredential.filter(device_id=device_id, revoked_at__isnull=False).count()
    older = f" · {revoked} revoked before it" if revoked else ""
    if live is None:
        return f"no MQTT password issued{' (' + str(revoked) + ' revoked)' if revoked else ''}"
    return f"MQTT password issued {_ago(live.created_at, now)} by {live.created_by}{older}"


async def _device_alerts(device_id: str) -> list[Alert]:
    live = await Alert.filter(device_id=device_id).exclude(state=AlertState.RESOLVED).order_by("-raised_at")
    done = await Alert.filter(device_id=device_id, state=AlertState.RESOLVED).order_by("-raised_at") \
        .limit(RESOLVED_ALERTS)
    return [*live, *done]


@router.get("/devices/{device_id}", response_class=HTMLResponse)
async def device_page(request: Request, runtime: RuntimeDep, device_id: DeviceId,
                      range_: str = Query("24h", alias="range", max_length=8),
                      start: str | None = Query(None, alias="from", max_length=32),
                      end: str | None = Query(None, alias="to", max_length=32)) -> Response:
    """One device for a person: identity, credentials, the verdict and the facts behind it, history
    charts over the chosen range, alerts, events, commands, desired vs. reported state."""
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    device = await Device.get_or_none(id=device_id)
    if device is None:
        return templates.TemplateResponse(request, "device.html", {"device": None, "device_id": device_id,
                                                                   "viewer": viewer}, status_code=404)
    view = LivenessView.of(runtime.link, runtime.settings)
    now = view.now
    tz = ZoneInfo(runtime.settings.timezone)
    refused = None
    try:
        window = _window(range_, start, end, now, tz)
    except HistoryRefused as err:
        refused = str(err)
        window = _window("24h", None, None, now, tz)
    verdict = view.judge(device)
    health = await HealthRecord.filter(device_id=device.id).order_by("-received_at", "-id").limit(RECENT_ROWS)
    chart_list, left_out = await _charts(device, window, tz)
    asset, fitted_now = await asset_of_device(device.id)  # docs/assets.md: the pole it is (or was) on
    current = list(history.numeric_paths(device.last_health or {}))
    return templates.TemplateResponse(request, "device.html", {
        "device": device, "viewer": viewer, "now": now, "banner": _banner(runtime, view),
        "broker": runtime.broker_url, "state": verdict.state.value.replace("_", "-"), "words": _words(verdict.state),
        "why": _reason_text(verdict, view), "gaps": await SeqGap.filter(device_id=device.id, open=True).count(),
        "silent_after": device.health_period_s * view.timing.silent_after_periods,
        "facts": _facts(device, now), "credential": await _credential(device.id, now),
        "asset": asset, "fitted_now": fitted_now,
        "current": current, "current_at": _ago(device.last_health_at, now),
        "window": window, "ranges": [*RANGES, "custom"], "refused": refused, "tz": runtime.settings.timezone,
        "charts": chart_list, "left_out": left_out,
        "alerts": await _device_alerts(device.id), "ago": lambda moment: _ago(moment, now),
        "children": await children_of(device.id, verdict.state),
        "events": await EventRecord.filter(device_id=device.id).order_by("-at", "-id").limit(RECENT_ROWS),
        "commands": await Command.filter(device_id=device.id).order_by("-created_at").limit(RECENT_ROWS),
        "brief": _brief, "desired": _pretty(device.desired_doc) if device.desired_doc is not None else None,
        "in_sync": device.reported_version == device.desired_version and device.reported_status == "applied",
        "health": [{"at": _ago(h.received_at, now), "stamp": f"{h.ses}/{h.seq}",
                    "summary": _health_summary(h.data) or "—", "up": h.data.get("up_s")} for h in health],
    }, status_code=422 if refused else 200)


def _facts(device: Device, now: datetime) -> list[tuple[str, str]]:
    def when(moment: datetime | None) -> str:
        return "—" if moment is None else f"{moment.strftime('%Y-%m-%d %H:%M:%S')} UTC ({_ago(moment, now)})"

    place = " / ".join(x for x in (device.ward, device.site) if x) or "—"
    if device.latitude is not None and device.longitude is not None:
        place += f" · {device.latitude:.5f}, {device.longitude:.5f}"
    return [
        ("Kind", device.kind or "?"),
        ("Roles", ", ".join(device.roles or []) or "—"),
        ("Ward / site", place),
        ("Tags", ", ".join(device.tags or []) or "—"),
        ("Firmware", device.fw or "—"),
        ("Registry status", device.status.value),
        ("Registered", when(device.created_at)),
        ("Last heard", when(device.last_seen_at)),
        ("Health period", f"{device.health_period_s} s"),
        ("Last birth", when(device.last_birth_at)),
        ("Last death", when(device.last_death_at) + (f" · {device.last_death_reason}"
                                                     if device.last_death_reason else "")),
        ("Judged silent", when(device.silenced_at)),
        ("Session", "—" if device.session is None else str(device.session)),
    ]
