"""Snapshots (docs/relay.md, "Snapshots"): a device's upload, and who may see one.

The store's rules are fleet/relay/snapshots.py's; here they meet HTTP.
"""

import asyncio
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fleet.api.deps import RuntimeDep, get_principal, source_of
from fleet.api.device_auth import AuthenticatedDevice
from fleet.api.errors import answer
from fleet.auth import audit
from fleet.auth.roles import Permission
from fleet.auth.url_tokens import TOKEN_MAX, UrlTokenError
from fleet.relay.models import Snapshot
from fleet.relay.snapshots import SHA256_PATTERN, SnapshotError, SnapshotStore, endpoint_of_token
from fleet.runtime import Runtime

UPLOAD_PATH = re.compile(r"^/api/devices/[^/]+/snapshots/[^/]+$")  # its own body limit (fleet/app.py)
router = APIRouter(tags=["snapshots"])
_bearer = HTTPBearer(auto_error=False, description="a person's API token or login session token")


def store_of(request: Request) -> SnapshotStore:
    """The process's one store (made on first use)."""
    found: SnapshotStore | None = getattr(request.app.state, "snapshot_store", None)
    if found is None:
        runtime: Runtime = request.app.state.runtime
        found = request.app.state.snapshot_store = SnapshotStore(runtime.settings)
    return found


StoreDep = Annotated[SnapshotStore, Depends(store_of)]


def _check_sha256(sha256: str) -> None:
    if not SHA256_PATTERN.match(sha256):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the path's SHA-256 must be 64 lower-case hex digits")


async def _read_body(request: Request, limit: int) -> bytes:
    def too_large() -> HTTPException:
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"request body over the limit of {limit} bytes "
                             "(FLEET_SNAPSHOT_MAX_BYTES)", headers={"Connection": "close"})

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large()  # the request guard refuses it first; kept for a direct mount
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


@router.put("/api/devices/{device_id}/snapshots/{sha256}", status_code=status.HTTP_201_CREATED, openapi_extra={
    "requestBody": {"required": True, "description": "the JPEG image",
                    "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}},
    responses={200: {"description": "the image was already held (nothing written)"},
               400: answer("the body is not a JPEG, or the path's SHA-256 is not 64 lower-case hex digits"),
               401: answer("no Basic credentials, or not the device's live MQTT password"),
               403: answer("the credentials are another device's, or the device is decommissioned"),
               413: answer("the body is over FLEET_SNAPSHOT_MAX_BYTES"),
               422: answer("the body's SHA-256 is not the one in the path"),
               429: answer("too many failed device log-ins from this address: wait Retry-After seconds"),
               507: answer("the device's share of the store (FLEET_SNAPSHOT_DEVICE_MAX_MB) is spent")})
async def upload_snapshot(device_id: str, sha256: str, request: Request, device: AuthenticatedDevice,
                          runtime: RuntimeDep, store: StoreDep) -> JSONResponse:
    """A device's upload of one snapshot, HTTP Basic as the device (id, MQTT password). Idempotent."""
    if device.id != device_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a device uploads its own snapshots only")
    _check_sha256(sha256)
    body = await _read_body(request, runtime.settings.snapshot_max_bytes)
    try:
        created = await store.put(device.id, sha256, body)
    except SnapshotError as err:
        raise HTTPException(err.status, str(err)) from err
    answer_: dict[str, Any] = {"sha256": sha256, "bytes": len(body), "stored": created}
    return JSONResponse(answer_, status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@router.get("/api/snapshots/{sha256}", response_class=FileResponse, responses={
    200: {"content": {"image/jpeg": {}}, "description": "the image; ETag its SHA-256, Cache-Control no-store "
                                                       "(a cached copy would be seen without an audited view)"},
    400: answer("the path's SHA-256 is not 64 lower-case hex digits"),
    401: answer("neither a token nor a person's credentials"),
    403: answer("the person lacks the snapshots permission, or the token is malformed, forged, expired or "
                "for another image"),
    404: answer("the fleet does not hold this image")})
async def get_snapshot(sha256: str, request: Request, runtime: RuntimeDep, store: StoreDep,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                       token: Annotated[str | None, Query(max_length=TOKEN_MAX,
                                                          description="a signed URL's token")] = None,
                       ) -> FileResponse:
    """An image: for a person with the `snapshots` permission (audited `snapshot.view`) or the
    holder of a relayed message's signed URL (audited `snapshot.fetch` by `endpoint:<name>`)."""
    _check_sha256(sha256)
    if token is not None:
        try:
            actor = endpoint_of_token(runtime.settings, token, sha256, datetime.now(UTC))
        except UrlTokenError as err:
            raise HTTPException(status.HTTP_403_FORBIDDEN, str(err)) from err
        action = "snapshot.fetch"
    else:
        principal = await get_principal(request, credentials)
        if not principal.may(Permission.SNAPSHOTS):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role.value!r} may not see snapshots "
                                                           f"(needs {Permission.SNAPSHOTS.value!r})")
        actor, action = principal.username, "snapshot.view"
    row = await Snapshot.get_or_none(sha256=sha256)
    path = store.path_of(sha256)
    if row is None or not await asyncio.to_thread(path.is_file):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the fleet does not hold this snapshot")
    await audit.record(actor, action, sha256, None, source_of(request))
    # Cache-Control: no-store, as every answer but /static/ (fleet/api/headers.py): each view is audited
    return FileResponse(path, media_type=row.type, headers={"ETag": f'"{sha256}"'})
