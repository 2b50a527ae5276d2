"""Enrollment tokens, self-enrollment, and device credentials."""

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field
from tortoise.exceptions import IntegrityError

from contract import DEVICE_ID_PATTERN, is_valid_device_id
from fleet.api.deps import (
    LOGGED_IN,
    Auditor,
    DeviceDep,
    Reader,
    RowId,
    RuntimeDep,
    acting,
    guards_of,
    record_locks,
    source_of,
    too_many,
)
from fleet.api.errors import answer
from fleet.auth import audit
from fleet.auth.roles import Permission
from fleet.auth.secrets import new_token, token_hash
from fleet.auth.throttle import Throttled
from fleet.broker_auth.accounts import AccountsError
from fleet.broker_auth.credentials import issue_credentials, revoke_credentials
from fleet.models import RETIRED_STATUSES, Device, DeviceCredential, DeviceStatus, EnrollmentToken
from fleet.runtime import Runtime

router = APIRouter(tags=["enrollment"])  # self-enrollment: the token is the credential
protected = APIRouter(tags=["enrollment"], dependencies=[LOGGED_IN])


class EnrollmentTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["pi", "esp32"]
    site: str = Field(min_length=1, max_length=120)
    ward: str = Field(default="", max_length=80)
    device_id: str | None = Field(default=None, pattern=f"^{DEVICE_ID_PATTERN}$",
                                  description="bind the token to one device id")
    ttl_hours: int = Field(default=72, ge=1, le=24 * 30)


class EnrollmentTokenIssued(BaseModel):
    id: int
    token: str = Field(description="shown once")
    kind: str
    site: str
    expires_at: datetime


class EnrollmentTokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    site: str
    ward: str
    device_id: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_device: str | None
    revoked_at: datetime | None


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=8, max_length=200)
    device_id: str | None = Field(default=None, pattern=f"^{DEVICE_ID_PATTERN}$")
    name: str = Field(default="", max_length=120)
    hw: str = Field(default="", max_length=120)


class MqttCredentials(BaseModel):
    username: str
    password: str = Field(description="shown once; the fleet keeps only a hash")
    host: str
    port: int
    tls: bool


class DeviceCredentials(BaseModel):
    device_id: str
    mqtt: MqttCredentials


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:30] or "site"


@protected.post("/api/enrollment-tokens", status_code=status.HTTP_201_CREATED)
async def create_enrollment_token(body: EnrollmentTokenCreate,
                                  audit_: Annotated[Auditor, acting(Permission.ENROLLMENT)]) -> EnrollmentTokenIssued:
    """A single-use token a device (or the technician's tool, offline) exchanges for credentials."""
    token = new_token()
    row = await EnrollmentToken.create(token_hash=token_hash(token), kind=body.kind, site=body.site,
                                       ward=body.ward, device_id=body.device_id, created_by=audit_.actor,
                                       expires_at=datetime.now(UTC) + timedelta(hours=body.ttl_hours))
    await audit_("enrollment.token.create", str(row.id), {"kind": body.kind, "site": body.site})
    return EnrollmentTokenIssued(id=row.id, token=token, kind=row.kind, site=row.site, expires_at=row.expires_at)


@protected.get("/api/enrollment-tokens")
async def list_enrollment_tokens(_: Reader) -> list[EnrollmentTokenPublic]:
    return [EnrollmentTokenPublic.model_validate(t) for t in await EnrollmentToken.all().order_by("-id")]


@protected.delete("/api/enrollment-tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_enrollment_token(token_id: RowId,
                                  audit_: Annotated[Auditor, acting(Permission.ENROLLMENT)]) -> None:
    updated = await EnrollmentToken.filter(id=token_id, used_at=None, revoked_at=None).update(
        revoked_at=datetime.now(UTC))
    if not updated:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no unused enrollment token {token_id}")
    await audit_("enrollment.token.revoke", str(token_id))


class _Refused(Exception):
    """An enrollment refused: the HTTP status, what the caller reads, and a short reason for the audit."""

    def __init__(self, status_code: int, message: str, why: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.why = why


async def _id_taken(device_id: str) -> bool:
    """Whether the id belongs to anything the fleet knows: a device, or credentials ever issued."""
    return await Device.exists(id=device_id) or await DeviceCredential.exists(device_id=device_id)


async def _claim(body: EnrollRequest, runtime: Runtime, now: datetime) -> tuple[EnrollmentToken, str, bool]:
    """Check the token and choose the device id; returns (token, id, whether the device is new)."""
    row = await EnrollmentToken.get_or_none(token_hash=token_hash(body.token))
    if row is None or row.revoked_at is not None:
        raise _Refused(status.HTTP_401_UNAUTHORIZED, "unknown or revoked enrollment token", "unknown token")
    if row.used_at is not None:
        raise _Refused(status.HTTP_410_GONE, "this enrollment token has already been used", "used token")
    if row.expires_at <= now:
        raise _Refused(status.HTTP_410_GONE, f"this enrollment token expired at {row.expires_at:%Y-%m-%d %H:%M} UTC",
                       "expired token")
    if row.device_id and body.device_id and body.device_id != row.device_id:
        raise _Refused(status.HTTP_403_FORBIDDEN, f"this token is for device {row.device_id!r}", "other device id")
    # The id comes from the token (bound: the one way to re-provision an existing device), else
    # from the caller (the tool and offline boards pick a fresh one), else from the fleet.
    device_id = row.device_id or body.device_id or f"{row.kind}-{_slug(row.site)}-{secrets.token_hex(3)}"
    if not is_valid_device_id(device_id):
        raise _Refused(status.HTTP_422_UNPROCESSABLE_CONTENT, "the token's site gives no valid device id", "bad id")
    if runtime.reserves(device_id):
        raise _Refused(status.HTTP_409_CONFLICT, f"{device_id!r} is one of the fleet's own accounts", "reserved id")
    existing = await Device.get_or_none(id=device_id)
    if existing is not None and existing.status in RETIRED_STATUSES:
        raise _Refused(status.HTTP_409_CONFLICT, f"device {device_id!r} is {existing.status.value}",
                       existing.status.value)
    if row.device_id is None and await _id_taken(device_id):
        raise _Refused(status.HTTP_409_CONFLICT,
                       f"device {device_id!r} already exists; enrolling it again needs an enrollment token "
                       "issued for that device id", "id taken")
    # claim the token atomically: of two concurrent uses, one wins
    if not await EnrollmentToken.filter(id=row.id, used_at=None).update(used_at=now, used_by_device=device_id):
        raise _Refused(status.HTTP_410_GONE, "this enrollment token has already been used", "used token")
    if existing is not None:
        return row, device_id, False
    try:
        # the primary key settles a race between two tokens proposing the same new id
        await Device.create(id=device_id, kind=row.kind, name=body.name, site=row.site, ward=row.ward,
                            status=DeviceStatus.REGISTERED)
    except IntegrityError as err:
        await EnrollmentToken.filter(id=row.id).update(used_at=None, used_by_device=None)
        raise _Refused(status.HTTP_409_CONFLICT, f"device {device_id!r} was just enrolled by someone else",
                       "id taken") from err
    return row, device_id, True


@router.post("/api/enroll", responses={
    409: {"description": "the device id exists (needs a token issued for it) or is the fleet's own"},
    429: {"description": "too many refused enrollments from this address: wait Retry-After seconds"}})
async def enroll(body: EnrollRequest, request: Request, runtime: RuntimeDep) -> DeviceCredentials:
    """Exchange an enrollment token for a device identity and MQTT credentials (no login: the token is it).

    A token bound to a device id enrolls that id, existing or not (re-provisioning: the old
    credentials stop working). An unbound token enrolls the id the caller proposes only if no
    device, and no credentials, ever had it; without a proposal the fleet makes one up.
    """
    source = source_of(request)
    guards = guards_of(request)
    refusal = guards.check_secret(source)
    if refusal is not None:
        raise too_many(Throttled(refusal))
    try:
        row, device_id, created = await _claim(body, runtime, datetime.now(UTC))
    except _Refused as err:
        lock = guards.secrets.failed(source)
        await audit.record("enrollment", "enroll.refused", body.device_id or "", {"why": err.why}, source)
        await record_locks("enrollment", "auth.secrets.throttled", [lock] if lock else [], source)
        raise HTTPException(err.status_code, str(err)) from err
    try:
        issued = await issue_credentials(runtime, device_id, f"enrollment:{row.id}", source)
    except AccountsError as err:
        # leave nothing behind: the token is usable again and a new id is free again
        await EnrollmentToken.filter(id=row.id).update(used_at=None, used_by_device=None)
        if created:
            await Device.filter(id=device_id).delete()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the broker did not take the account: {err}") from err
    return DeviceCredentials.model_validate(issued)


@protected.post("/api/devices/{device_id}/credentials", responses={
    409: answer("the device is decommissioned"), 503: answer("the broker did not take the account")})
async def rotate_credentials(device: DeviceDep, runtime: RuntimeDep, request: Request,
                             audit_: Annotated[Auditor, acting(Permission.CREDENTIALS)]) -> DeviceCredentials:
    """Issue new MQTT credentials for a registered device; older ones stop working at once."""
    if device.status in RETIRED_STATUSES:
        raise HTTPException(status.HTTP_409_CONFLICT, f"device {device.id!r} is {device.status.value}")
    try:
        issued: dict[str, Any] = await issue_credentials(runtime, device.id, audit_.actor, source_of(request))
    except AccountsError as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the broker did not take the account: {err}") from err
    return DeviceCredentials.model_validate(issued)


@protected.post("/api/devices/{device_id}/credentials/revoke",
                responses={503: answer("the broker did not remove the account")})
async def revoke_device_credentials(device: DeviceDep, runtime: RuntimeDep, request: Request,
                                    audit_: Annotated[Auditor, acting(Permission.CREDENTIALS)]) -> dict[str, int]:
    try:
        revoked = await revoke_credentials(runtime, device.id, audit_.actor, source_of(request))
    except AccountsError as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"the broker did not remove the account: {err}") from err
    return {"revoked": revoked}
