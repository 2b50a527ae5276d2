"""The emergency button for IOC staff (docs/broadcasts.md, "Pages" and "Emergency"):
`/broadcasts/emergency` picks a clip and the wards (or all of them), a second page names how many
speakers will play it (and how many are online now) and asks for the confirmation; only then
does it call the API's `POST /api/broadcasts/emergency` route function (fleet/api/routes/emergency.py,
which calls fleet/broadcast/emergency.py's `start_emergency` and audits it).
"""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from fleet.api.deps import get_runtime
from fleet.api.routes import emergency as api
from fleet.auth.people import Principal
from fleet.broadcast.calendar import Targets, resolve
from fleet.broadcast.emergency import IN_FORCE_DEFAULT_MIN
from fleet.broadcast.models import Clip
from fleet.ingest.silence import LivenessView
from fleet.liveness import State
from fleet.models import Device
from fleet.web.broadcast_kit import Outcome, call_api, choices, guarded, page, validation_errors, words_of
from fleet.web.pages import _form

router = APIRouter(include_in_schema=False)
PATH = "/broadcasts/emergency"
ALL_WARDS = "*"


def _fields(form: dict[str, list[str]], all_wards: list[str]) -> dict[str, Any]:
    def one(name: str, default: str = "") -> str:
        return (form.get(name) or [default])[0].strip()[:2000]

    wards = [w for w in form.get("wards", [])[:400] if w]
    if ALL_WARDS in wards:
        wards = list(all_wards)
    return {"title": one("title"), "clip_id": one("clip_id"), "wards": wards,
            "in_force_min": one("in_force_min", str(IN_FORCE_DEFAULT_MIN)), "all": ALL_WARDS in form.get("wards", [])}


async def _form_page(request: Request, viewer: Principal, fields: dict[str, Any] | None = None,
                     outcome: Outcome | None = None) -> Response:
    offered = await choices()
    tr = words_of(request)
    return page(request, "broadcast_emergency.html", {
        "viewer": viewer, "choices": offered, "step": "pick", "all_wards": ALL_WARDS,
        "fields": fields or {"title": tr("emergency.default_title"), "clip_id": "", "wards": [],
                             "in_force_min": str(IN_FORCE_DEFAULT_MIN), "all": False},
        "errors": outcome.errors if outcome else []}, outcome.status if outcome and outcome.errors else 200)


@router.get(PATH, response_class=HTMLResponse)
async def emergency_page(request: Request) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    return await _form_page(request, viewer)


@router.post(PATH, response_class=HTMLResponse)
async def emergency_submit(request: Request) -> Response:
    """step=confirm: the second page, naming the speakers; step=send with confirm=yes: it goes out."""
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    form = await _form(request)
    offered = await choices()
    fields = _fields(form, [ward for ward, _ in offered.wards])
    tr = words_of(request)
    sending = form.get("step", [""])[0] == "send"
    try:
        body = api.EmergencyCreate.model_validate({
            "title": fields["title"], "clip_id": fields["clip_id"] or None, "targets": {"wards": fields["wards"]},
            "in_force_min": fields["in_force_min"] or IN_FORCE_DEFAULT_MIN,
            "confirm": sending and form.get("confirm", [""])[0] == "yes"})
    except ValidationError as err:
        return await _form_page(request, viewer, fields, Outcome(errors=validation_errors(tr, err), status=422))
    if not body.targets.wards:
        return await _form_page(request, viewer, fields, Outcome(errors=[tr("emergency.no_wards")], status=422))
    if not sending:
        return await _confirm_page(request, viewer, fields, body)
    outcome = await call_api(api.emergency, request, viewer, body=body)
    if outcome.saved is not None:
        return RedirectResponse(f"/broadcasts/{outcome.saved.broadcast.id}?done=emergency", status_code=303)
    return await _form_page(request, viewer, fields, outcome)


async def _confirm_page(request: Request, viewer: Principal, fields: dict[str, Any],
                        body: "api.EmergencyCreate") -> Response:
    """How many speakers it reaches: the calendar's own target resolution, and how many are online
    now by the fleet's one liveness verdict."""
    speakers = await resolve(Targets(tuple(body.targets.wards)))
    runtime = get_runtime(request)
    view = LivenessView.of(runtime.link, runtime.settings)
    devices = await Device.filter(id__in=list(speakers))
    online = sum(1 for d in devices if view.judge(d).state == State.ONLINE)
    clip = await Clip.get_or_none(id=body.clip_id, deleted_at__isnull=True)
    if clip is None or not speakers:
        tr = words_of(request)
        why = tr("emergency.no_clip") if clip is None else tr("emergency.no_speakers")
        return await _form_page(request, viewer, fields, Outcome(errors=[why], status=422))
    return page(request, "broadcast_emergency.html", {
        "viewer": viewer, "step": "confirm", "fields": fields, "clip": clip, "speakers": len(speakers),
        "online": online, "wards": body.targets.wards, "in_force_min": body.in_force_min, "errors": []})
