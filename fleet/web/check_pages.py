"""The checks at the pole on a phone (docs/assets.md, "Checks at the pole"): `/devices/{id}/check`, the
same items as `GET /api/devices/{id}/check`, with buttons for the install tests (`POST
/devices/{id}/check/test`, which calls the API's own route function: the same role check (DEVICE_WRITE),
bound, command and audit row, the viewer as the actor). The form is a POST that fleet.api.csrf's
CrossSiteGuard lets through only from the fleet's own pages. Vietnamese or English (fleet/web/i18n.py);
an item's detail (numbers, units) is shown as the API words it."""

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from contract import DEVICE_ID_PATTERN
from fleet.api.deps import get_runtime
from fleet.api.routes import device_check as api
from fleet.assets import check_run
from fleet.assets.models import Asset
from fleet.auth.people import Principal
from fleet.auth.roles import Permission
from fleet.ingest.silence import LivenessView
from fleet.models import Device
from fleet.web.broadcast_kit import call_api
from fleet.web.i18n import language_of, translate
from fleet.web.pages import _form, templates, viewer_of

router = APIRouter(include_in_schema=False)
# the catalogue's key of each item and status (literal keys: both catalogues hold them)
ITEM_KEYS = {"online": "check.item.online", "rssi": "check.item.rssi", "firmware": "check.item.firmware",
             "last_health": "check.item.last_health", "lamp": "check.item.lamp", "lamp_test": "check.item.lamp_test",
             "tone_test": "check.item.tone_test", "sensor": "check.item.sensor"}
STATUS_KEYS = {"pass": "check.status.pass", "warn": "check.status.warn", "fail": "check.status.fail"}
DONE_KEYS = {"lamp_on": "check.sent.lamp_on", "test_tone": "check.sent.test_tone"}


def _valid_id(device_id: str) -> bool:
    return re.fullmatch(DEVICE_ID_PATTERN, device_id) is not None


async def _render(request: Request, viewer: Principal, device: Device, sent: str | None = None,
                  error: str | None = None, status_code: int = 200) -> Response:
    runtime = get_runtime(request)
    lang = language_of(request)
    items = await check_run.run_check(device, LivenessView.of(runtime.link, runtime.settings))
    rows = [{"name": translate(lang, ITEM_KEYS.get(i.item, i.item)), "status": i.status.value,
             "status_text": translate(lang, STATUS_KEYS[i.status.value]), "detail": i.detail} for i in items]
    asset = await Asset.get_or_none(device_id=device.id)
    roles = set(device.roles or [])
    context: dict[str, Any] = {"viewer": viewer, "device": device, "asset": asset, "rows": rows,
               "overall": "fail" if any(r["status"] == "fail" for r in rows)
               else "warn" if any(r["status"] == "warn" for r in rows) else "pass",
               "may_test": viewer.may(Permission.DEVICE_WRITE), "has_light": "light" in roles,
               "has_speaker": "speaker" in roles, "lamp_max_s": check_run.LAMP_TEST_MAX_S,
               "sent": translate(lang, DONE_KEYS[sent]) if sent in DONE_KEYS else None, "error": error}
    return templates.TemplateResponse(request, "device_check.html", context, status_code=status_code)


@router.get("/devices/{device_id}/check", response_class=HTMLResponse)
async def check_page(request: Request, device_id: str, sent: str | None = None) -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    device = await Device.get_or_none(id=device_id) if _valid_id(device_id) else None
    if device is None:
        return templates.TemplateResponse(request, "notice.html", {
            "viewer": viewer, "message": translate(language_of(request), "check.no_device")}, status_code=404)
    return await _render(request, viewer, device, sent=sent)


@router.post("/devices/{device_id}/check/test", response_class=HTMLResponse)
async def check_test(request: Request, device_id: str) -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    device = await Device.get_or_none(id=device_id) if _valid_id(device_id) else None
    if device is None:
        return templates.TemplateResponse(request, "notice.html", {
            "viewer": viewer, "message": translate(language_of(request), "check.no_device")}, status_code=404)
    lang = language_of(request)
    if not viewer.may(Permission.DEVICE_WRITE):
        return await _render(request, viewer, device, error=translate(lang, "check.error.role",
                                                                      role=viewer.role.value), status_code=403)
    form = await _form(request)
    action = (form.get("action") or [""])[0]
    seconds = (form.get("seconds") or ["30"])[0]
    try:
        body = api.InstallTest.model_validate({"action": action, "seconds": seconds})
    except ValidationError:
        return await _render(request, viewer, device, error=translate(lang, "check.error.form",
                                                                      max=check_run.LAMP_TEST_MAX_S), status_code=422)
    outcome = await call_api(api.install_test, request, viewer, device=device, body=body)
    if outcome.errors:
        return await _render(request, viewer, device, error=outcome.errors[0], status_code=outcome.status)
    return RedirectResponse(f"/devices/{device.id}/check?sent={body.action}", status_code=303)
