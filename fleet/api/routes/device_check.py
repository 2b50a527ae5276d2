"""Checks at the pole (docs/assets.md, "Checks at the pole"): `GET /api/devices/{id}/check`, a verdict per
item, and `POST /api/devices/{id}/install-test`, the install-time tests a technician may send (lamp on
for at most 60 s, a test tone), bounded per device and audited."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from fleet.api.deps import LOGGED_IN, Auditor, DeviceDep, Reader, RuntimeDep, acting
from fleet.api.errors import answer
from fleet.assets import check_run, checks
from fleet.auth.roles import Permission
from fleet.ingest.link import LinkError
from fleet.ingest.silence import LivenessView
from fleet.models import DeviceStatus

router = APIRouter(prefix="/api/devices/{device_id}", tags=["checks at the pole"], dependencies=[LOGGED_IN])


class CheckItemPublic(BaseModel):
    item: str
    status: checks.Status
    detail: str


class CheckPublic(BaseModel):
    device_id: str
    overall: checks.Status  # fail if any item fails, else warn if any warns, else pass
    items: list[CheckItemPublic]
    at: datetime


class InstallTest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"action": "lamp_on", "seconds": 30}, {"action": "test_tone"}]})

    action: Literal["lamp_on", "test_tone"]
    seconds: int = Field(30, ge=1, le=check_run.LAMP_TEST_MAX_S,
                         description="lamp_on: how long the lamp stays on (1..60 s)")


class InstallTestPublic(BaseModel):
    command_id: str
    name: str
    action: str
    expires_ms: int


@router.get("/check")
async def get_check(device: DeviceDep, _: Reader, runtime: RuntimeDep) -> CheckPublic:
    """A pass, warn or fail per item for a technician at the pole."""
    view = LivenessView.of(runtime.link, runtime.settings)
    items = await check_run.run_check(device, view)
    return CheckPublic(device_id=device.id, overall=checks.overall(items), at=view.now,
                       items=[CheckItemPublic(item=i.item, status=i.status, detail=i.detail) for i in items])


@router.post("/install-test", status_code=status.HTTP_202_ACCEPTED, responses={
    409: answer("the device is retired, or has no role for this test"),
    429: answer(f"more than {check_run.TESTS_PER_MINUTE} install tests on this device in a minute"),
    503: answer("the broker link is down: the command is recorded as 'unsent'")})
async def install_test(device: DeviceDep, body: InstallTest, runtime: RuntimeDep,
                       audit: Annotated[Auditor, acting(Permission.DEVICE_WRITE)]) -> InstallTestPublic:
    """Send one install-time test as a command with a 30 s expiry; its result shows in the check."""
    if device.status in (DeviceStatus.DECOMMISSIONED, DeviceStatus.REPLACED):
        raise HTTPException(status.HTTP_409_CONFLICT, f"device {device.id!r} is {device.status.value}")
    try:
        await check_run.admit_test(device.id, datetime.now(UTC))
        test = await check_run.make_test(device, body.action, body.seconds)
    except check_run.TooManyTests as err:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(err),
                            headers={"Retry-After": str(err.retry_after_s)}) from err
    except check_run.TestRefused as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from err
    command = test.command
    detail = {"action": body.action, "command": command.id, "name": command.name, "args": command.args}
    try:
        await runtime.link.publish(test.topic, test.payload)
    except LinkError as err:
        command.status = "unsent"
        await command.save()
        await audit(check_run.AUDIT_ACTION, device.id, {**detail, "sent": False})
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"test not sent: {err}") from err
    await audit(check_run.AUDIT_ACTION, device.id, detail)
    return InstallTestPublic(command_id=command.id, name=command.name, action=body.action,
                             expires_ms=command.expires_ms)
