"""The audio library for IOC staff (docs/broadcasts.md, "Pages"): `/audio` lists the clips with a
player each (the pi variant, from `/api/audio/{id}/file`), the storage used against the budget, an
upload form (multipart, as `POST /api/audio` takes it), a text-to-speech form and delete buttons.

Every change calls the API's route function (fleet/api/routes/audio.py): the same checks,
refusals and audit; a refusal is shown on the page with the API's reason.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from fleet.api.deps import RowId, get_runtime
from fleet.api.routes import audio as api
from fleet.auth.people import Principal
from fleet.web.broadcast_kit import (
    Outcome,
    call_api,
    guarded,
    may_broadcast,
    page,
    read_api,
    validation_errors,
    words_of,
)
from fleet.web.pages import _form

router = APIRouter(include_in_schema=False)
UPLOAD_PATH = "/audio/upload"  # a large body: fleet/app.py gives it the library's upload limit
LISTED = 200  # clips on the page, newest first
DONE = frozenset({"uploaded", "spoken", "deleted"})
MB = 1024 * 1024


async def library_page(request: Request, viewer: Principal, *, done: str | None = None,
                       outcome: Outcome | None = None, speech: dict[str, str] | None = None) -> Response:
    tr = words_of(request)
    listing = Response()
    clips = await read_api(api.list_clips, request, viewer, response=listing, limit=LISTED, offset=0)
    usage = await read_api(api.library_usage, request, viewer)
    settings = get_runtime(request).settings
    used_pct = min(100.0, 100.0 * usage.used_bytes / usage.budget_bytes) if usage.budget_bytes else 0.0
    rows = [{"c": clip, "created": tr.at(clip.created_at), "duration": _duration(clip.duration_ms),
             "source": tr("audio.tts_voice", voice=clip.voice) if clip.source == "tts" else clip.source_format,
             "bytes": sum(f.bytes for f in clip.files), "loudness": _loudness(clip.files)} for clip in clips]
    return page(request, "audio.html", {
        "viewer": viewer, "may_change": may_broadcast(viewer), "rows": rows,
        "total": int(listing.headers.get(api.TOTAL_HEADER, len(rows))), "shown": LISTED,
        "used_mb": f"{usage.used_bytes / MB:.1f}", "budget_mb": f"{usage.budget_bytes / MB:.0f}",
        "used_pct": round(used_pct, 2), "full": used_pct >= 90, "done": done if done in DONE else None,
        "errors": outcome.errors if outcome else [], "upload_max_mb": settings.audio_upload_max // MB,
        "max_s": f"{settings.audio_max_s:g}", "speech": speech or {"title": "", "text": "", "voice": "vi"},
    }, outcome.status if outcome and outcome.errors else 200)


def _duration(ms: int) -> str:
    seconds = round(ms / 1000)
    return f"{seconds // 60}:{seconds % 60:02d}"


def _loudness(files: list[Any]) -> str:
    return " · ".join(f"{f.kind} {f.loudness_lufs:.1f} LUFS" for f in files)


@router.get("/audio", response_class=HTMLResponse)
async def audio_page(request: Request, done: Annotated[str | None, Query(max_length=20)] = None) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    return await library_page(request, viewer, done=done)


@router.post(UPLOAD_PATH, response_class=HTMLResponse)
async def upload_submit(request: Request) -> Response:
    """The browser's multipart form (file, title) goes to the API's upload as it is."""
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    outcome = await call_api(api.upload_clip, request, viewer)
    if outcome.saved is not None:
        return RedirectResponse("/audio?done=uploaded", status_code=303)
    return await library_page(request, viewer, outcome=outcome)


@router.post("/audio/tts", response_class=HTMLResponse)
async def speech_submit(request: Request) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    fields = await _form(request)
    typed = {name: fields.get(name, [""])[0] for name in ("title", "text", "voice")}
    try:
        body = api.SpeechCreate.model_validate(typed)
    except ValidationError as err:
        return await library_page(request, viewer, speech=typed,
                                  outcome=Outcome(errors=validation_errors(words_of(request), err), status=422))
    outcome = await call_api(api.speak_clip, request, viewer, body=body)
    if outcome.saved is not None:
        return RedirectResponse("/audio?done=spoken", status_code=303)
    return await library_page(request, viewer, outcome=outcome, speech=typed)


@router.post("/audio/{clip_id}/delete", response_class=HTMLResponse)
async def delete_submit(request: Request, clip_id: RowId) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    outcome = await call_api(api.delete_clip, request, viewer, clip_id=clip_id)
    if outcome.status < 400:
        return RedirectResponse("/audio?done=deleted", status_code=303)
    return await library_page(request, viewer, outcome=outcome)
