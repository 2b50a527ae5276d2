"""The asset pages (docs/assets.md, "Pages"): `/assets` (filtered by ward and kind), `/assets/{id}`
(its place, attributes, the device fitted now with its presence, fit / swap / remove forms, the
fittings, charts of its history across devices), `/assets/new` and `/assets/{id}/edit`. Built for a
phone too: a technician opens `/assets/{id}` from the QR label on the pole.

Reading needs READ; the forms DEVICE_WRITE. They are POSTs that fleet.api.csrf's CrossSiteGuard lets
through only from the fleet's own pages; changes go through fleet/assets/service.py (the API's own
functions: the same checks and audit) with the viewer as the actor. Texts from the catalogue."""

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import ValidationError
from tortoise.exceptions import IntegrityError

from fleet.api.deps import get_runtime, source_of
from fleet.api.routes.assets import ASSET_ID_PATTERN, AssetCreate, AssetUpdate
from fleet.assets import history as asset_history
from fleet.assets import service
from fleet.assets.models import Asset, AssetKind, Fitting
from fleet.auth import audit
from fleet.auth.people import Principal
from fleet.auth.roles import Permission
from fleet.ingest.silence import LivenessView
from fleet.models import Device
from fleet.ops import history
from fleet.web import charts, i18n
from fleet.web.pages import _ago, _form, templates, viewer_of

router = APIRouter(include_in_schema=False)
PAGE = 200  # assets a page of /assets
RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
CHART_POINTS = 120  # a phone's width
HEALTH_FIELDS = ("rssi", "temp_c", "heap_free")  # charted when the devices send them
TELEMETRY_FIELDS = {"light": ("level", "current_a", "power_w"), "speaker": ("volume",), "sensor": ("pm25", "temp_c")}
FITTINGS_SHOWN = 50
DONE = ("created", "saved", "fitted", "swapped", "removed")


def _t(request: Request, key: str, **params: Any) -> str:
    return i18n.translate(i18n.language_of(request), key, **params)


async def _viewer(request: Request, change: bool = False) -> Principal | Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    if change and not viewer.may(Permission.DEVICE_WRITE):
        return _notice(request, viewer, _t(request, "assets.may_not", role=viewer.role.value), 403)
    return viewer


def _notice(request: Request, viewer: Principal, message: str, status_code: int) -> Response:
    return templates.TemplateResponse(request, "ops_notice.html", {"viewer": viewer, "message": message},
                                      status_code=status_code)


def _valid_id(asset_id: str) -> bool:
    return re.fullmatch(ASSET_ID_PATTERN, asset_id) is not None


# -- the list ------------------------------------------------------------------------------------

@router.get("/assets", response_class=HTMLResponse)
async def assets_page(request: Request, ward: Annotated[str, Query(max_length=80)] = "",
                      kind: Annotated[str, Query(max_length=16)] = "") -> Response:
    viewer = await _viewer(request)
    if isinstance(viewer, Response):
        return viewer
    query = Asset.all()
    if ward:
        query = query.filter(ward=ward)
    if kind in AssetKind.__members__.values():
        query = query.filter(kind=kind)
    assets = await query.order_by("ward", "id").limit(PAGE)
    total = await query.count()
    runtime = get_runtime(request)
    view = LivenessView.of(runtime.link, runtime.settings)
    devices = {d.id: d for d in await Device.filter(id__in=[a.device_id for a in assets if a.device_id])}
    rows = [{"asset": a, "device": devices.get(a.device_id or ""),
             "state": view.judge(devices[a.device_id]).state.value if a.device_id in devices else None}
            for a in assets]
    wards = sorted({str(w) for w in await Asset.all().distinct().values_list("ward", flat=True) if w})
    return templates.TemplateResponse(request, "assets.html", {
        "viewer": viewer, "rows": rows, "total": total, "shown": len(rows), "wards": wards,
        "kinds": [k.value for k in AssetKind], "chosen": {"ward": ward, "kind": kind},
        "may_write": viewer.may(Permission.DEVICE_WRITE)})


# -- one asset -----------------------------------------------------------------------------------

async def _charts(asset_id: str, start: datetime, end: datetime, tz: ZoneInfo) -> list[dict[str, Any]]:
    """The asset's fields over the range, each drawn from every device over its own time on the asset."""
    found = await asset_history.pieces(asset_id, start, end)
    if not found:
        return []
    roles: set[str] = set()
    for device_roles in await Device.filter(id__in=[p.fitting.device_id for p in found]).values_list(
            "roles", flat=True):
        roles.update(r for r in device_roles or [] if isinstance(r, str))
    plans: list[tuple[history.Source, str | None, str]] = []
    health = await asset_history.known_fields(found, "health", None)
    plans += [("health", None, name) for name in HEALTH_FIELDS if name in health]
    for device_role in sorted(roles & TELEMETRY_FIELDS.keys()):
        known = await asset_history.known_fields(found, "telemetry", device_role)
        plans += [("telemetry", device_role, name) for name in TELEMETRY_FIELDS[device_role] if name in known]
    drawn = []
    for source, role, name in plans:
        points = await asset_history.series(found, source, name, CHART_POINTS, role)
        shaped = [history.Point(at=p["at"], min=p["min"], max=p["max"], mean=p["mean"], n=p["n"]) for p in points]
        title = name if role is None else f"{role} · {name}"
        chart = charts.render(shaped, start, end, tz, title=title, bucket=(end - start) / CHART_POINTS)
        query = {"source": source, "field": name, "from": start.isoformat(), "to": end.isoformat(),
                 **({"role": role} if role else {})}
        drawn.append({"title": title, "svg": Markup(chart.svg),  # charts.render escapes every text
                      "api": f"/api/assets/{asset_id}/history?{urlencode(query)}"})
    return drawn


async def _asset_page(request: Request, viewer: Principal, asset: Asset, *, error: str | None = None,
                      done: str | None = None, range_: str = "7d", status_code: int = 200) -> Response:
    runtime = get_runtime(request)
    view = LivenessView.of(runtime.link, runtime.settings)
    now = view.now
    tz = ZoneInfo(runtime.settings.timezone)
    device = await Device.get_or_none(id=asset.device_id) if asset.device_id else None
    verdict = view.judge(device) if device is not None else None
    span = RANGES.get(range_, RANGES["7d"])
    fittings = await Fitting.filter(asset_id=asset.id).order_by("-fitted_at", "-id").limit(FITTINGS_SHOWN)
    month = datetime.now(UTC).astimezone(tz).strftime("%Y-%m")
    return templates.TemplateResponse(request, "asset.html", {
        "viewer": viewer, "asset": asset, "device": device,
        "state": verdict.state.value if verdict else None,
        "seen": _ago(device.last_seen_at, now) if device is not None else "",
        "in_sync": device is not None and device.reported_version == device.desired_version
        and device.reported_status == "applied",
        "program": asset_history.program_digest(device.desired_doc) if device is not None else None,
        "fittings": fittings, "ago": lambda moment: _ago(moment, now),
        "charts": await _charts(asset.id, now - span, now, tz), "range": range_ if range_ in RANGES else "7d",
        "ranges": list(RANGES), "tz": tz.key, "month": month,
        "may_write": viewer.may(Permission.DEVICE_WRITE), "error": error,
        "done": _t(request, f"assets.done.{done}") if done in DONE else None}, status_code=status_code)


async def _load(request: Request, asset_id: str, viewer: Principal) -> Asset | Response:
    asset = await Asset.get_or_none(id=asset_id) if _valid_id(asset_id) else None
    if asset is None:
        return _notice(request, viewer, _t(request, "assets.none", id=asset_id[:63]), 404)
    return asset


@router.get("/assets/new", response_class=HTMLResponse)
async def new_asset_page(request: Request) -> Response:
    viewer = await _viewer(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    return _form_page(request, viewer, None, {"kind": "pole", "attributes": ""})


@router.get("/assets/{asset_id}", response_class=HTMLResponse)
async def asset_page(request: Request, asset_id: str, done: Annotated[str, Query(max_length=16)] = "",
                     range_: Annotated[str, Query(alias="range", max_length=8)] = "7d") -> Response:
    viewer = await _viewer(request)
    if isinstance(viewer, Response):
        return viewer
    asset = await _load(request, asset_id, viewer)
    if isinstance(asset, Response):
        return asset
    return await _asset_page(request, viewer, asset, done=done, range_=range_)


async def _change(request: Request, asset_id: str, what: str) -> Response:
    """A fit, swap or remove form: the service's function with the viewer as the actor."""
    viewer = await _viewer(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    asset = await _load(request, asset_id, viewer)
    if isinstance(asset, Response):
        return asset
    form = await _form(request)
    device_id = (form.get("device_id") or [""])[0].strip()[:63]
    try:
        if what == "fit":
            await service.fit(asset.id, device_id, viewer.username, source_of(request))
        elif what == "swap":
            await service.swap(get_runtime(request), asset.id, device_id, viewer.username, source_of(request))
        else:
            await service.remove(asset.id, viewer.username, source_of(request))
    except service.AssetError as err:
        return await _asset_page(request, viewer, await service.get_asset(asset.id), error=err.message,
                                 status_code=err.status)
    done = {"fit": "fitted", "swap": "swapped", "remove": "removed"}[what]
    return RedirectResponse(f"/assets/{asset.id}?done={done}", status_code=303)


@router.post("/assets/{asset_id}/fit", response_class=HTMLResponse)
async def fit_submit(request: Request, asset_id: str) -> Response:
    return await _change(request, asset_id, "fit")


@router.post("/assets/{asset_id}/swap", response_class=HTMLResponse)
async def swap_submit(request: Request, asset_id: str) -> Response:
    return await _change(request, asset_id, "swap")


@router.post("/assets/{asset_id}/remove", response_class=HTMLResponse)
async def remove_submit(request: Request, asset_id: str) -> Response:
    return await _change(request, asset_id, "remove")


# -- create and edit -----------------------------------------------------------------------------

def _form_page(request: Request, viewer: Principal, asset: Asset | None, values: dict[str, Any],
               errors: list[str] | None = None, status_code: int = 200) -> Response:
    return templates.TemplateResponse(request, "asset_form.html", {
        "viewer": viewer, "asset": asset, "values": values, "errors": errors or [],
        "kinds": [k.value for k in AssetKind]}, status_code=status_code)


def _attributes_text(attributes: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {v}" for k, v in attributes.items())


def _parse_value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _values(form: dict[str, list[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the form showed, the body for the API's schema): attributes as `key = value` lines."""
    shown = {name: (form.get(name) or [""])[0].strip() for name in
             ("id", "kind", "name", "ward", "address", "latitude", "longitude", "attributes")}
    body: dict[str, Any] = {k: shown[k] for k in ("id", "kind", "name", "ward", "address")}
    for name in ("latitude", "longitude"):
        body[name] = _parse_value(shown[name]) if shown[name] else None
    attributes: dict[str, Any] = {}
    for line in shown["attributes"].splitlines()[:40]:
        key, sep, value = line.partition("=")
        if key.strip():
            attributes[key.strip()] = _parse_value(value.strip()) if sep else ""
    body["attributes"] = attributes
    return shown, body


def _problems(err: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}" for problem in err.errors()[:10]]


@router.post("/assets/new", response_class=HTMLResponse)
async def new_asset_submit(request: Request) -> Response:
    viewer = await _viewer(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    shown, body = _values(await _form(request))
    try:
        made = AssetCreate.model_validate(body)
    except ValidationError as err:
        return _form_page(request, viewer, None, shown, _problems(err), 422)
    try:
        await Asset.create(**made.model_dump(), updated_by=viewer.username[:80])
    except IntegrityError:
        return _form_page(request, viewer, None, shown, [_t(request, "assets.exists", id=made.id)], 409)
    await audit.record(viewer.username, "asset.create", made.id, made.model_dump(mode="json"), source_of(request))
    return RedirectResponse(f"/assets/{made.id}?done=created", status_code=303)


@router.get("/assets/{asset_id}/edit", response_class=HTMLResponse)
async def edit_asset_page(request: Request, asset_id: str) -> Response:
    viewer = await _viewer(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    asset = await _load(request, asset_id, viewer)
    if isinstance(asset, Response):
        return asset
    shown = {"id": asset.id, "kind": asset.kind.value, "name": asset.name, "ward": asset.ward,
             "address": asset.address, "latitude": "" if asset.latitude is None else asset.latitude,
             "longitude": "" if asset.longitude is None else asset.longitude,
             "attributes": _attributes_text(asset.attributes or {})}
    return _form_page(request, viewer, asset, shown)


@router.post("/assets/{asset_id}/edit", response_class=HTMLResponse)
async def edit_asset_submit(request: Request, asset_id: str) -> Response:
    viewer = await _viewer(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    asset = await _load(request, asset_id, viewer)
    if isinstance(asset, Response):
        return asset
    shown, body = _values(await _form(request))
    shown["id"] = asset.id
    body.pop("id")
    try:
        changes = AssetUpdate.model_validate(body)
    except ValidationError as err:
        return _form_page(request, viewer, asset, shown, _problems(err), 422)
    values = changes.model_dump()
    asset.update_from_dict({**values, "updated_by": viewer.username[:80]})
    await asset.save()
    await audit.record(viewer.username, "asset.update", asset.id, changes.model_dump(mode="json"), source_of(request))
    return RedirectResponse(f"/assets/{asset.id}?done=saved", status_code=303)
