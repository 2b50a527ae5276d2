"""The audio library (/api/audio) and the speakers' clip downloads (/audio/files).

The rules are fleet/broadcast/library.py's; here they meet HTTP (docs/broadcasts.md, "Audio library").
"""

import asyncio
import shutil
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from fleet.api.deps import LOGGED_IN, Auditor, Reader, RowId, RuntimeDep, acting
from fleet.api.errors import ValidationErrorPublic, answer
from fleet.api.routes.broadcasts import calendar_of
from fleet.auth.roles import Permission
from fleet.auth.url_tokens import TOKEN_MAX
from fleet.broadcast.audio_tools import AudioError
from fleet.broadcast.library import Library, Usage
from fleet.broadcast.models import Clip, ClipFile
from fleet.runtime import Runtime

AUDIO_PATH = "/api/audio"
router = APIRouter(prefix=AUDIO_PATH, tags=["audio library"], dependencies=[LOGGED_IN])
files = APIRouter(prefix="/audio/files", tags=["speaker downloads"])  # the token is the credential
TITLE_MAX = 200
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="the clip file's SHA-256")]


def library_of(request: Request) -> Library:
    """The process's one library (made on first use: it prepares its folder and token secret)."""
    found: Library | None = getattr(request.app.state, "audio_library", None)
    if found is None:
        runtime: Runtime = request.app.state.runtime
        found = request.app.state.audio_library = Library(runtime.settings)
    return found


LibraryDep = Annotated[Library, Depends(library_of)]


class ClipFilePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    kind: str = Field(description="the speaker kind this variant is for: esp32 (WAV 16 kHz mono) or pi "
                                  "(WAV 48 kHz mono)")
    sha256: str
    bytes: int
    sample_rate: int
    duration_ms: int
    loudness_lufs: float = Field(description="integrated loudness measured on the stored file (EBU R128)")
    true_peak_dbtp: float


class ClipPublic(BaseModel):
    id: int
    title: str
    source: str = Field(description="upload or tts")
    source_format: str = Field(description="WAV, MP3, OGG, M4A, or TTS")
    source_bytes: int
    text: str | None
    voice: str | None
    duration_ms: int
    created_at: datetime
    created_by: str
    files: list[ClipFilePublic]


class UsagePublic(BaseModel):
    used_bytes: int
    budget_bytes: int
    clips: int


class SpeechCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    text: str = Field(min_length=1, max_length=2000)
    voice: Literal["vi", "en"] = "vi"


def _shown(clip: Clip, files: list[ClipFilePublic]) -> ClipPublic:
    # the model's `files` is the reverse relation; the rows are read by the caller, in one query for a page
    fields = {name: getattr(clip, name) for name in ClipPublic.model_fields if name != "files"}
    return ClipPublic(**fields, files=files)


async def _public(clip: Clip) -> ClipPublic:
    rows = await ClipFile.filter(clip_id=clip.id).order_by("kind")
    return _shown(clip, [ClipFilePublic.model_validate(r) for r in rows])


async def _get(clip_id: int) -> Clip:
    clip = await Clip.get_or_none(id=clip_id, deleted_at__isnull=True)
    if clip is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no clip {clip_id}")
    return clip


def _refused(err: AudioError) -> HTTPException:
    return HTTPException(err.status, str(err))


_REFUSALS: dict[int | str, dict[str, Any]] = {
    409: answer("the same audio is already in the library, or the library is full (FLEET_AUDIO_BUDGET_MB)"),
    422: {"model": ValidationErrorPublic,
          "description": "not audio, empty, too short, too long (FLEET_AUDIO_MAX_S), corrupt or cut, silent, or "
                         "another format than WAV, MP3, OGG or M4A (the detail says which); or a bad request shape"},
    503: answer("ffmpeg, ffprobe or espeak-ng is missing or took too long, or the library is busy")}


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra={
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "title"],
        "properties": {"file": {"type": "string", "format": "binary", "description": "WAV, MP3, OGG or M4A"},
                       "title": {"type": "string", "maxLength": TITLE_MAX}}}}}}},
    responses={**_REFUSALS, 400: answer("the body is not a form with one file and a title"),
               411: answer("the upload did not declare its Content-Length"),
               413: answer("the upload is over FLEET_AUDIO_UPLOAD_MAX bytes")})
async def upload_clip(request: Request, runtime: RuntimeDep, library: LibraryDep,
                      audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> ClipPublic:
    """Add a clip: probed, loudness-normalised (EBU R128) and transcoded for each speaker kind."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise HTTPException(status.HTTP_411_LENGTH_REQUIRED, "an upload must declare its Content-Length")
    if int(declared) > runtime.settings.audio_upload_max:  # the guard refuses it first; kept for a direct mount
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"request body over the limit of {runtime.settings.audio_upload_max} bytes")
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "send the clip as multipart/form-data with 'file' and 'title'")
    try:
        form = await request.form(max_files=1, max_fields=4)
    except ClientDisconnect:
        raise
    except Exception as err:  # starlette's MultiPartException and the parser's own errors
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not a readable multipart form") from err
    try:
        upload, title = form.get("file"), form.get("title")
        if not isinstance(upload, UploadFile):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "the form has no file part named 'file'")
        if not isinstance(title, str) or not 0 < len(title.strip()) <= TITLE_MAX:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"title: 1 to {TITLE_MAX} characters")
        staged = library.temp_path()
        with staged.open("wb") as out:
            await asyncio.to_thread(shutil.copyfileobj, upload.file, out)
    finally:
        await form.close()
    try:
        clip = await library.add_upload(staged, title.strip(), audit.actor)
    except AudioError as err:
        raise _refused(err) from err
    await audit("audio.upload", str(clip.id), {"title": clip.title, "format": clip.source_format,
                                               "duration_ms": clip.duration_ms})
    return await _public(clip)


@router.post("/tts", status_code=status.HTTP_201_CREATED, responses=_REFUSALS)
async def speak_clip(body: SpeechCreate, library: LibraryDep,
                     audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> ClipPublic:
    """Add a clip spoken from a text by espeak-ng (voice `vi` or `en`)."""
    try:
        clip = await library.add_speech(body.text, body.voice, body.title.strip() or "notice", audit.actor)
    except AudioError as err:
        raise _refused(err) from err
    await audit("audio.tts", str(clip.id), {"title": clip.title, "voice": body.voice, "chars": len(body.text)})
    return await _public(clip)


TOTAL_HEADER = "X-Total-Count"


@router.get("", responses={200: {"headers": {TOTAL_HEADER: {
    "description": "how many clips the library holds", "schema": {"type": "integer"}}}}})
async def list_clips(_: Reader, response: Response, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                     offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[ClipPublic]:
    """The library's clips, newest first."""
    selected = Clip.filter(deleted_at__isnull=True)
    response.headers[TOTAL_HEADER] = str(await selected.count())
    clips = await selected.order_by("-id").offset(offset).limit(limit)
    rows = await ClipFile.filter(clip_id__in=[c.id for c in clips]).order_by("kind")
    by_clip: dict[int, list[ClipFilePublic]] = {}
    for row in rows:
        by_clip.setdefault(row.clip_id, []).append(ClipFilePublic.model_validate(row))  # type: ignore[attr-defined]
    return [_shown(c, by_clip.get(c.id, [])) for c in clips]


@router.get("/usage")
async def library_usage(_: Reader, library: LibraryDep) -> UsagePublic:
    """Bytes the clips' files take and the budget (FLEET_AUDIO_BUDGET_MB)."""
    usage: Usage = await library.usage()
    return UsagePublic(used_bytes=usage.used_bytes, budget_bytes=usage.budget_bytes, clips=usage.clips)


@router.get("/{clip_id}")
async def get_clip(clip_id: RowId, _: Reader) -> ClipPublic:
    return await _public(await _get(clip_id))


@router.get("/{clip_id}/file", response_class=FileResponse,
            responses={200: {"content": {"audio/wav": {}}, "description": "the variant's WAV file"}})
async def clip_file(clip_id: RowId, _: Reader, library: LibraryDep,
                    kind: Literal["pi", "esp32"] = "pi") -> FileResponse:
    """A variant's bytes, for a person's player."""
    clip = await _get(clip_id)
    row = await ClipFile.get_or_none(clip_id=clip.id, kind=kind)
    path = library.path_of(row.sha256) if row is not None else None
    if path is None or not await asyncio.to_thread(path.is_file):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"clip {clip.id} has no {kind} file")
    return FileResponse(path, media_type="audio/wav", filename=f"clip-{clip.id}-{kind}.wav")


@router.delete("/{clip_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={409: answer("a broadcast that will still play uses the clip")})
async def delete_clip(clip_id: RowId, request: Request, library: LibraryDep,
                      audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> Response:
    """Remove a clip's files; the clip stays in the history of the broadcasts that played it."""
    clip = await _get(clip_id)
    try:
        await library.delete(clip, await calendar_of(request).in_use(clip.id, datetime.now(UTC)), audit.actor)
    except AudioError as err:
        raise _refused(err) from err
    await audit("audio.delete", str(clip.id), {"title": clip.title})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@files.get("/{sha256}", response_class=FileResponse, responses={
    200: {"content": {"audio/wav": {}}, "description": "the clip file"},
    403: answer("no token, or it is malformed, forged, expired, for another file, or for a device that is "
                "not registered or is decommissioned"),
    404: answer("no such clip file")})
async def download_clip(sha256: Sha256, library: LibraryDep,
                        t: Annotated[str | None, Query(max_length=TOKEN_MAX, description="the download token")] = None,
                        ) -> FileResponse:
    """A speaker's download of a clip file, with the token the fleet gave it."""
    try:
        path = await library.authorize(t, sha256)
    except AudioError as err:
        raise _refused(err) from err
    return FileResponse(path, media_type="audio/wav")
