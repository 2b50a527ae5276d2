"""The map at `/map` (docs/ops.md, "The map"): the devices that have coordinates as dots coloured
by the fleet's verdict (fleet/liveness.py, as everywhere), a ring on those with an alert not
resolved, each a link to its device page; drawn on the server as one SVG over the ward outlines
of FLEET_WARD_OUTLINES, else over a plain graticule. No tiles, no script, no internet.
Filters (ward, kind, state) are a GET form and mean what they mean for `GET /api/devices`."""

import os
from functools import lru_cache
from html import escape as quote  # per dot: markupsafe's escape costs 3x more
from pathlib import Path
from typing import Annotated, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape

from fleet.api.deps import RuntimeDep
from fleet.api.routes.devices import DeviceFilters, view_of
from fleet.api.schemas import Kind
from fleet.gis import Frame, OutlineError, Placed, WardOutline, load_outlines, open_alerts, placed, without_place
from fleet.liveness import State
from fleet.models import Device
from fleet.web.pages import templates, viewer_of

router = APIRouter(include_in_schema=False)
MAP_MAX = 20_000  # devices drawn; beyond, the page says how many were left out (filter to see them)
WIDTH = 1000  # the SVG's width in its own units (it scales to the page)
STATES = (State.ONLINE, State.STALE, State.OFFLINE, State.NEVER_SEEN, State.UNKNOWN, State.DECOMMISSIONED)


@lru_cache(maxsize=4)
def _outlines_at(path: str, changed_ns: int, size: int) -> list[WardOutline]:
    """Parsed once per version of the file (its path, time of change and size are the key)."""
    return load_outlines(Path(path))


def outlines_of(path: Path | None) -> tuple[list[WardOutline], str | None]:
    """The ward outlines, or none and why: the start checked the file, but it may have changed since."""
    if path is None:
        return [], None
    try:
        stat = os.stat(path)
        return _outlines_at(str(path), stat.st_mtime_ns, stat.st_size), None
    except OSError as err:
        return [], f"FLEET_WARD_OUTLINES {path}: {err.strerror or 'cannot be read'}"
    except OutlineError as err:
        return [], f"FLEET_WARD_OUTLINES {path}: {err}"


def _radius(count: int) -> float:
    return 6.0 if count <= 200 else 4.5 if count <= 1000 else 3.0 if count <= 5000 else 2.2


def draw(frame: Frame, outlines: list[WardOutline], dots: list[tuple[Placed, State, int]]) -> Markup:
    """The map as one SVG element: outlines (or a graticule), then one <a><circle> per device."""
    parts = [f'<svg id="map" class="map" viewBox="0 0 {frame.width:g} {frame.height:g}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="map of the devices">']
    parts.append(f'<rect class="sea" width="{frame.width:g}" height="{frame.height:g}"/>')
    verticals, horizontals = frame.graticule()
    parts.append('<g class="grid">')
    parts += [f'<line x1="{x:g}" y1="0" x2="{x:g}" y2="{frame.height:g}"/>' for _, x in verticals]
    parts += [f'<line x1="0" y1="{y:g}" x2="{frame.width:g}" y2="{y:g}"/>' for _, y in horizontals]
    parts += [f'<text x="{x + 3:g}" y="{frame.height - 6:g}">{lon:.3f}°E</text>' for lon, x in verticals]
    parts += [f'<text x="4" y="{y - 3:g}">{lat:.3f}°N</text>' for lat, y in horizontals]
    parts.append("</g>")
    if outlines:
        parts.append('<g class="wards">')
        for outline in outlines:
            parts.append(f'<path data-ward="{escape(outline.ward)}" d="{frame.path(outline.rings)}"/>')
        parts.append('</g><g class="ward-names">')
        for outline in outlines:
            for polygon in outline.polygons:  # each part of a ward named; at its outer ring's vertices' mean
                ring = polygon[0][:-1] if polygon[0][0] == polygon[0][-1] else polygon[0]
                x, y = frame.xy(sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring))
                parts.append(f'<text x="{x:g}" y="{y:g}">{escape(outline.label)}</text>')
        parts.append("</g>")
    r = _radius(len(dots))
    parts.append(f'<g class="dots" data-r="{r:g}">')
    for device, state, alerts in dots:
        x, y = frame.xy(device.longitude, device.latitude)
        css = f"s-{state.value}" + (" alert" if alerts else "")
        title = f"{device.id} · {state.value.replace('_', ' ')}" + (f" · {alerts} alert(s)" if alerts else "")
        marker = f'<circle cx="{x:g}" cy="{y:g}" r="{r * 1.8:g}" class="ring"/>' if alerts else ""
        parts.append(f'<a href="/devices/{quote(device.id)}"><title>{quote(title)}</title>{marker}'
                     f'<circle cx="{x:g}" cy="{y:g}" r="{r:g}" class="{css}"/></a>')
    parts.append("</g></svg>")
    return Markup("".join(parts))


@router.get("/map", response_class=HTMLResponse)
async def map_page(request: Request, runtime: RuntimeDep,
                   ward: Annotated[str, Query(max_length=80)] = "",
                   kind: Annotated[str, Query(max_length=16)] = "",
                   state: Annotated[str, Query(max_length=16)] = "") -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    errors = []
    if kind and kind not in get_args(Kind):
        errors.append(f"kind must be one of {', '.join(get_args(Kind))}")
        kind = ""
    if state and state not in {s.value for s in State}:
        errors.append(f"state must be one of {', '.join(s.value for s in STATES)}")
        state = ""
    view = view_of(runtime)
    selected = DeviceFilters(kind=kind or None, ward=ward or None, state=State(state) if state else None).select(view)
    devices = await placed(selected, 0, MAP_MAX + 1)
    left_out = 0
    if len(devices) > MAP_MAX:
        devices = devices[:MAP_MAX]
        left_out = await selected.filter(latitude__isnull=False, longitude__isnull=False).count() - MAP_MAX
    unplaced = await without_place(selected).count()
    alerts = await open_alerts()
    outlines, outline_error = outlines_of(runtime.settings.ward_outlines)
    dots = [(d, view.judge(d).state, alerts.get(d.id, 0)) for d in devices]
    counts = {s: 0 for s in STATES}
    for _, verdict, _ in dots:
        counts[verdict] += 1
    points: list[tuple[float, float]] = [(d.longitude, d.latitude) for d in devices]
    points += [p for o in outlines for ring in o.rings for p in ring]
    frame = Frame.fit(points, WIDTH)
    wards = sorted({str(w) for w in await Device.all().distinct().values_list("ward", flat=True) if w}
                   | {o.ward for o in outlines})
    return templates.TemplateResponse(request, "map.html", {
        "viewer": viewer, "svg": draw(frame, outlines, dots), "counts": counts, "shown": len(dots),
        "with_alerts": sum(1 for *_, n in dots if n), "left_out": left_out, "unplaced": unplaced,
        "outline_error": outline_error, "outlined": bool(outlines), "errors": errors,
        "wards": wards, "kinds": get_args(Kind), "states": STATES,
        "chosen": {"ward": ward, "kind": kind, "state": state}, "now": view.now,
        "geojson": "/api/gis/devices.geojson?" + urlencode({k: v for k, v in (("ward", ward), ("kind", kind),
                                                                            ("state", state)) if v}),
    }, status_code=422 if errors else 200)

