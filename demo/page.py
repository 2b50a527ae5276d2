"""The demo's own page, `/city`: each device with the evidence of its job, from what the fleet
stored (its latest telemetry, events and health figures), on the fleet's own HTTP server.

A camera event's snapshot is the one the camera Pi uploaded to the fleet (docs/relay.md,
"Snapshots"), shown from `/api/snapshots/{sha256}` to a viewer allowed to see snapshots (each view
audited), and named only for the others.
"""

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

from fleet.auth.roles import Permission
from fleet.ingest.silence import LivenessView
from fleet.models import Device, EventRecord, TelemetryRecord
from fleet.relay.models import Snapshot
from fleet.runtime import Runtime
from fleet.web import pages

RECENT = 20  # telemetry rows looked at for a role's latest reading of one kind


def _templates() -> Jinja2Templates:
    """The demo's templates, extending the fleet's `base.html` (its header, its stylesheet), with the
    functions the fleet's templates call (its nav's `t`, `lang`, `may_broadcast`, ...)."""
    loader = ChoiceLoader([FileSystemLoader(Path(__file__).parent / "templates"),
                           FileSystemLoader(Path(pages.__file__).parent / "templates")])
    env = Environment(loader=loader, autoescape=select_autoescape())
    env.globals.update({k: v for k, v in pages.templates.env.globals.items() if k not in env.globals})
    return Jinja2Templates(env=env)


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    seconds = max(int((now - moment).total_seconds()), 0)
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def _num(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


async def _telemetry(device_id: str, role: str, wanted: Callable[[dict[str, Any]], bool]) -> TelemetryRecord | None:
    rows = await TelemetryRecord.filter(device_id=device_id, role=role).order_by("-id").limit(RECENT)
    return next((row for row in rows if wanted(row.readings)), None)


async def _event(device_id: str, **where: Any) -> EventRecord | None:
    return await EventRecord.filter(device_id=device_id, **where).order_by("-id").first()


class Job(dict[str, Any]):
    """What one role shows: `what` (a line), `detail` (a smaller line), `image` (a URL) or none."""


def _program(program: Any) -> str:
    """A light program's steps in words (the first rule: the demo's program has one)."""
    try:
        steps = program["rules"][0]["steps"]
        words = [f"{s['level']} % from " + (f"{s['at']}" if "at" in s else
                                            f"sun{s['sun']} {int(s.get('off', 0)):+d} min") for s in steps]
    except (KeyError, IndexError, TypeError, ValueError):
        return "program from the fleet" if program else "no program"
    return "program: " + ", ".join(words)


async def _light(device: Device, figures: Mapping[str, Any], now: datetime) -> Job:
    row = await _telemetry(device.id, "light", lambda r: "level" in r)
    if row is None:
        return Job(what=f"lamp at {figures.get('level', '?')} %", detail="no light telemetry yet")
    r = row.readings
    return Job(what=f"lamp at {_num(r['level'], 0)} % · {_num(r.get('ma', 0), 0)} mA",
               detail=f"{_program((device.desired_doc or {}).get('light'))} · burnt {_num(r.get('burn_h', 0), 2)} h · "
                      f"{_num(r.get('energy_wh', 0), 2)} Wh · "
                      f"failures {figures.get('failures', 0)} · day burning {figures.get('day_burning', 0)} · "
                      f"{_ago(row.received_at, now)}")


async def _speaker(device: Device, figures: Mapping[str, Any], now: datetime) -> Job:
    event = await _event(device.id, type="playback")
    if event is None:
        return Job(what="no broadcast yet", detail="the demo schedules one, 30 s ahead, once the speakers are online")
    d = event.data
    reason = f" ({d['reason']})" if d.get("reason") else ""
    counts = " · ".join(f"{k} {figures[k]}" for k in ("played", "failed", "clips") if k in figures)
    ended = await EventRecord.filter(device_id=device.id, type="playback", phase="end").order_by("-id").first()
    last = (f"last ended: {ended.data.get('broadcast')} {ended.data.get('status')} {_ago(ended.received_at, now)}"
            if ended is not None else "none ended yet")
    return Job(what=f"broadcast {d.get('broadcast')}: {d.get('status')}{reason}",
               detail=f"clip {d.get('clip')} · {last} · {counts}")


async def _sensor(device: Device, figures: Mapping[str, Any], now: datetime) -> Job:
    # a compressed point carries the readings that moved: the newest value of each, from recent rows
    rows = await TelemetryRecord.filter(device_id=device.id, role="sensor").order_by("-id").limit(RECENT)
    latest: dict[str, Any] = {}
    for row in rows:
        for key in ("pm25", "pm10"):
            if key in row.readings:
                latest.setdefault(key, row.readings[key])
    alarm = " · ALARM" if figures.get("alarms_active") else ""
    if "pm25" not in latest:
        return Job(what="no reading yet", detail=f"frames {figures.get('frames', 0)}")
    return Job(what=f"PM2.5 {_num(latest['pm25'])} · PM10 {_num(latest.get('pm10', '?'))} µg/m³{alarm}",
               detail=f"frames {figures.get('frames', 0)} · points sent {figures.get('points', 0)} · "
                      f"alarms {figures.get('alarm_events', 0)} · {_ago(rows[0].received_at, now)}")


async def _camera(device: Device, figures: Mapping[str, Any], now: datetime) -> Job:
    event = await _event(device.id, snapshot__not_isnull=True)
    fps = f"{_num(figures.get('fps', 0))} fps · events {figures.get('events', 0)}"
    if event is None:
        return Job(what="no event yet", detail=fps)
    d = event.data
    where = d.get("zone") or event.category
    ref = str((event.snapshot or {}).get("ref", ""))
    sha256 = str((event.snapshot or {}).get("sha256", ""))
    held = bool(sha256) and await Snapshot.exists(sha256=sha256)
    return Job(what=f"{event.type} {event.phase} ({where}) · {d.get('area_pct', '?')} % of the frame",
               detail=f"{fps} · snapshot {ref}{'' if held else ' (not uploaded yet)'} · {_ago(event.received_at, now)}",
               image=f"/api/snapshots/{sha256}" if held else None)


async def _hotspot(device: Device, figures: Mapping[str, Any], now: datetime) -> Job:
    hour = await _telemetry(device.id, "hotspot", lambda r: r.get("period_s") == 3600)
    last = (f"last hour: {_num(hour.readings.get('accesses'), 0)} accesses, "
            f"{_num(hour.readings.get('users'), 0)} users" if hour else "hourly counts at the end of the hour")
    return Job(what=f"{figures.get('connected', 0)} connected now · {figures.get('events', 0)} station events",
               detail=f"{last} · no MAC leaves the Pi")


async def _sim(device: Device, figures: Mapping[str, Any], now: datetime) -> Job:
    row = await _telemetry(device.id, "sim", lambda r: True)
    if row is None:
        return Job(what="no reading yet", detail="")
    return Job(what=" · ".join(f"{k} {_num(v)}" for k, v in list(row.readings.items())[:4]),
               detail=f"made-up readings · {_ago(row.received_at, now)}")


JOBS = {"light": _light, "speaker": _speaker, "sensor": _sensor, "camera": _camera, "hotspot": _hotspot,
        "sim": _sim}


async def _jobs(device: Device, now: datetime) -> list[Job]:
    health = device.last_health or {}
    roles = health.get("roles")
    figures: dict[str, Any] = roles if isinstance(roles, dict) else {}
    jobs = []
    for role in device.roles or []:
        if role in JOBS:
            job = await JOBS[role](device, figures.get(role) or {}, now)
            jobs.append(Job(role=role, **job))
    return jobs


def install(app: FastAPI) -> None:
    """Add `/city` to the fleet's app."""
    templates = _templates()
    router = APIRouter(include_in_schema=False)

    @router.get("/city", response_class=HTMLResponse)
    async def city_page(request: Request) -> Response:
        viewer = await pages.viewer_of(request)
        if viewer is None:
            return RedirectResponse("/login", status_code=303)
        runtime: Runtime = request.app.state.runtime
        view = LivenessView.of(runtime.link, runtime.settings)
        rows = []
        may_see = viewer.may(Permission.SNAPSHOTS)  # the pictures show citizens (docs/relay.md)
        for device in await Device.all().order_by("ward", "id"):
            state = view.judge(device).state
            jobs = [job if may_see else Job(**{**job, "image": None}) for job in await _jobs(device, view.now)]
            rows.append({"device": device, "state": state.value.replace("_", "-"),
                         "words": state.value.replace("_", " "), "jobs": jobs})
        return templates.TemplateResponse(request, "city.html", {
            "rows": rows, "viewer": viewer, "now": view.now})

    app.include_router(router)
