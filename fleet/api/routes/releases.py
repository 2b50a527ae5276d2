"""OTA releases: publish, list, show, delete (/api/releases); the devices' downloads (/ota/files).

The rules are fleet/ota/releases.py's; here they meet HTTP (docs/fleet.md "Releases").
"""

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect

from fleet.api.deps import LOGGED_IN, Auditor, Reader, RuntimeDep, acting
from fleet.api.errors import answer
from fleet.auth.roles import Permission
from fleet.ota.models import Release, ReleaseBlob
from fleet.ota.releases import Download, DownloadRefused, PublishRefused, Releases
from fleet.ota.tokens import TOKEN_MAX
from fleet.runtime import Runtime

RELEASES_PATH = "/api/releases"
router = APIRouter(prefix=RELEASES_PATH, tags=["releases"], dependencies=[LOGGED_IN])
files = APIRouter(prefix="/ota/files", tags=["ota downloads"])  # the token is the credential

TAR_TYPES = frozenset({"application/x-tar", "application/tar", "application/octet-stream"})
# a class may hold `_` (a lab Pi's pi-x86_64), so a release name may too: pi-x86_64-0.2.0
ReleaseName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._+-]{0,63}$", description="e.g. esp32-0.2.0")]


def service_of(app: FastAPI) -> Releases:
    """The process's one releases service: the rollout engine's, or (a set-up without one) its own."""
    found: Releases | None = getattr(app.state, "releases", None)
    if found is None:
        runtime: Runtime = app.state.runtime
        found = runtime.rollouts.releases if runtime.rollouts is not None else Releases(runtime.settings)
        app.state.releases = found
    return found


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[Releases]:
    """The releases service with its delta worker, for the app's lifespan."""
    releases = service_of(app)
    releases.start()
    try:
        yield releases
    finally:
        await releases.close()


def releases_of(request: Request) -> Releases:
    return service_of(request.app)


ReleasesDep = Annotated[Releases, Depends(releases_of)]


class FileEntry(BaseModel):
    path: str
    sha256: str
    size: int


class DeltaEntry(BaseModel):
    base_release: str | None = Field(description="the release whose file it patches")
    base_sha256: str = Field(description="the SHA-256 of the file it patches (an offer's `from`)")
    sha256: str
    size: int


class ReleasePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    kind: str
    version: str
    min_version: str
    floor: str
    classes: list[str]
    expires: int = Field(description="the metadata's expiry, Unix seconds")
    key_ids: list[str] = Field(description="the keys whose signatures the fleet checked")
    files: list[FileEntry]
    total_size: int
    deltas: list[DeltaEntry] = Field(default_factory=list, description="Pi: bsdiff4 patches to its file")
    deltas_state: str = Field(description="Pi: `pending` until the deltas are made, then `done` (or `failed`); "
                                          "esp32: `none`")
    downloads: int = Field(description="file requests answered with this release's tokens")
    bytes_served: int
    created_at: datetime
    created_by: str


class ReleaseDetail(ReleasePublic):
    meta: str = Field(description="the signed metadata text, exactly as signed")
    sigs: list[dict[str, Any]]


async def _public(release: Release, detail: bool = False) -> ReleasePublic:
    rows = await ReleaseBlob.filter(release_id=release.id, base_sha256__isnull=False).order_by("id")
    deltas = [DeltaEntry(base_release=r.base_release, base_sha256=r.base_sha256 or "", sha256=r.sha256,
                         size=r.size) for r in rows]
    model = ReleaseDetail if detail else ReleasePublic
    return model.model_validate(release).model_copy(update={"deltas": deltas})


async def _get(name: str) -> Release:
    release = await Release.get_or_none(name=name)
    if release is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no release {name!r}")
    return release


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra={
    "requestBody": {"required": True, "description": "a tar of the release folder: release.json and the files",
                    "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}},
    responses={400: answer("the body is not a readable tar archive"),
               409: answer("a release of this name is already published"),
               413: answer("the upload is over FLEET_OTA_RELEASE_MAX bytes"),
               415: answer("the body is not sent as application/x-tar"),
               422: answer("the release is refused: unsigned, unknown key, bad signature, bad or expired "
                           "metadata, a file missing, or a file's size or SHA-256 not the signed one"),
               503: answer("the fleet holds no release keys (FLEET_OTA_KEYS)")})
async def publish_release(request: Request, runtime: RuntimeDep, releases: ReleasesDep,
                          audit: Annotated[Auditor, acting(Permission.RELEASES)]) -> ReleaseDetail:
    """Publish a signed release: the tar `provision release build/sign` makes of its folder."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in TAR_TYPES:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "send the release folder as a tar archive (Content-Type: application/x-tar)")
    limit = runtime.settings.ota_release_max
    upload = releases.store.temp_path()
    size = 0
    out = await asyncio.to_thread(upload.open, "wb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"request body over the limit of {limit} bytes",
                                    headers={"Connection": "close"})
            await asyncio.to_thread(out.write, chunk)
    except (HTTPException, ClientDisconnect):
        out.close()
        await asyncio.to_thread(upload.unlink, missing_ok=True)
        raise
    out.close()
    try:
        release = await releases.publish(upload, audit.actor)
    except PublishRefused as err:
        await audit("release.publish.refused", "", {"status": err.status, "reason": err.msg[:200]})
        raise HTTPException(err.status, err.msg) from err
    await audit("release.publish", release.name, {"kind": release.kind, "version": release.version,
                                                 "classes": release.classes, "keys": release.key_ids,
                                                 "files": len(release.files), "size": release.total_size})
    detail = await _public(release, detail=True)
    assert isinstance(detail, ReleaseDetail)
    return detail


@router.get("")
async def list_releases(_: Reader, kind: Annotated[str | None, Query(pattern="^(pi|esp32)$")] = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 100,
                        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[ReleasePublic]:
    """The published releases, newest first."""
    query = Release.filter(kind=kind) if kind else Release.all()
    rows = await query.order_by("-created_at", "-id").offset(offset).limit(limit)
    return [await _public(release) for release in rows]


@router.get("/{name}")
async def get_release(name: ReleaseName, _: Reader) -> ReleaseDetail:
    detail = await _public(await _get(name), detail=True)
    assert isinstance(detail, ReleaseDetail)
    return detail


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT,
               responses={409: answer("a rollout still uses the release")})
async def delete_release(name: ReleaseName, releases: ReleasesDep,
                         audit: Annotated[Auditor, acting(Permission.RELEASE_DELETE)]) -> Response:
    """Delete a release and the files no other release needs; refused while a rollout uses it."""
    release = await _get(name)
    try:
        await releases.delete(release)
    except PublishRefused as err:
        raise HTTPException(err.status, err.msg) from err
    await audit("release.delete", name, {"kind": release.kind, "version": release.version})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# downloads --------------------------------------------------------------------------------------
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The [start, end) a Range header asks for; None: the whole file (no header, or one this
    server ignores, such as several ranges); "unsatisfiable": 416."""
    if header is None:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None or (not found[1] and not found[2]):
        return None
    if not found[1]:  # bytes=-N: the last N bytes
        suffix = int(found[2])
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size
    start = int(found[1])
    end = int(found[2]) + 1 if found[2] else size
    if found[2] and end <= start:
        return None  # not a valid range: ignored, as RFC 9110 §14.2 says
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size)


def _refusal(err: DownloadRefused) -> JSONResponse:
    return JSONResponse({"detail": err.msg}, status_code=err.status)


@files.get("/{sha256}", responses={
    200: {"content": {"application/octet-stream": {}}, "description": "the whole file"},
    206: {"content": {"application/octet-stream": {}}, "description": "the range asked for (Content-Range)"},
    403: answer("no token, a malformed, forged or expired token, or a file not of the token's release"),
    404: answer("no such file"),
    416: answer("the range starts at or after the file's end")}, response_class=Response)
async def download(sha256: Annotated[str, Path(max_length=64)], releases: ReleasesDep,
                   t: Annotated[str | None, Query(max_length=TOKEN_MAX, description="the offer's token")] = None,
                   range_: Annotated[str | None, Header(alias="range", include_in_schema=False)] = None,
                   ) -> Response:
    """A release file or delta, for the device the token names (docs/ota.md, the offer's `url`)."""
    try:
        found: Download = await releases.authorize(t, sha256)
    except DownloadRefused as err:
        return _refusal(err)
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{found.sha256}"'}
    wanted = byte_range(range_, found.size)
    if wanted == "unsatisfiable":
        return JSONResponse({"detail": f"the range is outside the file's {found.size} bytes"}, status_code=416,
                            headers={"Content-Range": f"bytes */{found.size}"})
    start, end = wanted if isinstance(wanted, tuple) else (0, found.size)
    code = 206 if isinstance(wanted, tuple) else 200
    if code == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{found.size}"
    headers["Content-Length"] = str(end - start)
    await releases.count(found, end - start)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in releases.store.read(found.sha256, start, end):
            yield chunk

    return StreamingResponse(body(), status_code=code, media_type="application/octet-stream", headers=headers)
