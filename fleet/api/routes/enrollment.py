"""Enrollment tokens, self-enrollment, and device credentials."""

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from fleet.api.deps import LOGGED_IN, Auditor, DeviceDep, Reader, RuntimeDep, acting, source_of
from fleet.auth import audit
from fleet.auth.roles import Permission
from fleet.auth.secrets import new_token, token_hash
from fleet.broker_auth.accounts import AccountsError
from fleet.broker_auth.credentials import issue_credentials, revoke_credentials
from fleet.contract import DEVICE_ID_PATTERN, is_valid_device_id
from fleet.models import Device, DeviceStatus, EnrollmentToken

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
async def revoke_enrollment_token(token_id: int,
                                  audit_: Annotated[Auditor, acting(Permission.ENROLLMENT)]) -> None:
    updated = await EnrollmentToken.filter(id=token_id, used_at=None, revoked_at=None).update(
        revoked_at=datetime.now(UTC))
    if not updated:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no unused enrollment token {token_id}")
    await audit_("enrollment.token.revoke", str(token_id))


@router.post("/api/enroll")
async def enroll(body: EnrollRequest, request: Request, runtime: RuntimeDep) -> DeviceCredentials:
    """Exchange an enrollment token for a device identity and MQTT credentials (no login: the token is it)."""
    now = datetime.now(UTC)
    row = await EnrollmentToken.get_or_none(token_hash=token_hash(body.token))
    if row is None or row.revoked_at is not None:
        await audit.record("enrollment", "enroll.refused", body.device_id or "", {"why": "unknown token"},
                           source_of(request))
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked enrollment token")
    if row.used_at is not None:
        raise HTTPException(status.HTTP_410_GONE, "this enrollment token has already been used")
    if row.expires_at <= now:
        raise HTTPException(status.HTTP_410_GONE,
                            f"this enrollment token expired at {row.expires_at:%Y-%m-%d %H:%M} UTC")
    device_id = row.device_id or body.device_id or f"{row.kind}-{_slug(row.site)}-{secrets.token_hex(3)}"
    if row.device_id and body.device_id and body.device_id != row.device_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token is for device {row.device_id!r}")
    if not is_valid_device_id(device_id):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"bad device id {device_id!r}")
    existing = await Device.get_or_none(id=device_id)
    if existing is not None and existing.status == DeviceStatus.DECOMMISSIONED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"device {device_id!r} is decommissioned")
    # claim the token atomically: of two concurrent uses, one wins
    claimed = await EnrollmentToken.filter(id=row.id, used_at=None).update(used_at=now, used_by_device=device_id)
    if not claimed:
        raise HTTPException(status.HTTP_410_GONE, "this enrollment token has already been used")
    if existing is None:
        await Device.create(id=device_id, kind=row.kind, name=body.name, site=row.site, ward=row.ward,
                            status=DeviceStatus.REGISTERED)
    try:
        issued = await issue_credentials(runtime, device_id, f"enrollment:{row.id}", source_of(request))
    except AccountsError as err:
        await EnrollmentToken.filter(id=row.id).update(used_at=None, used_by_device=None)  # usable again
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the broker did not take the account: {err}") from err
    return DeviceCredentials.model_validate(issued)


@protected.post("/api/devices/{device_id}/credentials")
async def rotate_credentials(device: DeviceDep, runtime: RuntimeDep, request: Request,
                             audit_: Annotated[Auditor, acting(Permission.CREDENTIALS)]) -> DeviceCredentials:
    """Issue new MQTT credentials for a registered device; older ones stop working at once."""
    if device.status == DeviceStatus.DECOMMISSIONED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"device {device.id!r} is decommissioned")
    try:
        issued: dict[str, Any] = await issue_credentials(runtime, device.id, audit_.actor, source_of(request))
    except AccountsError as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the broker did not take the account: {err}") from err
    return DeviceCredentials.model_validate(issued)


@protected.post("/api/devices/{device_id}/credentials/revoke")
async def revoke_device_credentials(device: DeviceDep, runtime: RuntimeDep, request: Request,
                                    audit_: Annotated[Auditor, acting(Permission.CREDENTIALS)]) -> dict[str, int]:
    try:
        revoked = await revoke_credentials(runtime, device.id, audit_.actor, source_of(request))
    except AccountsError as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"the broker did not remove the account: {err}") from err
    return {"revoked": revoked}
