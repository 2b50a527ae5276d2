"""Talking to a device: commands and the desired-state document."""

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status

from contract import ContractError, make_command
from fleet.api.deps import LOGGED_IN, Auditor, DeviceDep, Reader, RuntimeDep, acting
from fleet.api.errors import answer
from fleet.api.schemas import CommandCreate, CommandPublic, DesiredPublic, DesiredUpdate
from fleet.auth.roles import Permission
from fleet.broadcast.delivery import mark_due
from fleet.desired import DesiredChanged, claim_desired
from fleet.ingest.link import LinkError
from fleet.models import RETIRED_STATUSES, Command, Device
from fleet.runtime import Runtime

router = APIRouter(prefix="/api/devices/{device_id}", tags=["device control"], dependencies=[LOGGED_IN])


def _refuse_retired(device: Device) -> None:
    if device.status in RETIRED_STATUSES:
        raise HTTPException(status.HTTP_409_CONFLICT, f"device {device.id!r} is {device.status.value}")


@router.post("/commands", status_code=status.HTTP_202_ACCEPTED, responses={
    409: answer("the device is decommissioned"),
    503: answer("the broker link is down: the command is recorded as 'unsent'")})
async def send_command(device: DeviceDep, body: CommandCreate, runtime: RuntimeDep,
                       audit: Annotated[Auditor, acting(Permission.COMMAND)]) -> CommandPublic:
    """Send a command; the device's result arrives later on the command's record."""
    _refuse_retired(device)
    command_id = uuid.uuid4().hex
    expires_ms = int(time.time() * 1000) + body.ttl_s * 1000
    try:
        topic, payload = make_command(device.id, command_id, body.name, body.args, expires_ms)
    except ContractError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    command = await Command.create(id=command_id, device_id=device.id, name=body.name, args=body.args,
                                   expires_ms=expires_ms)
    try:
        await runtime.link.publish(topic, payload)
    except LinkError as err:
        command.status = "unsent"
        await command.save()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"command not sent: {err}") from err
    await audit("device.command", device.id, {"id": command_id, "name": body.name, "args": body.args})
    return CommandPublic.model_validate(command)


@router.get("/commands/{command_id}")
async def get_command(device: DeviceDep, command_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")],
                      _: Reader) -> CommandPublic:
    command = await Command.get_or_none(id=command_id, device_id=device.id)
    if command is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no such command for {device.id!r}")
    return CommandPublic.model_validate(command)


@router.get("/desired")
async def get_desired(device: DeviceDep, _: Reader) -> DesiredPublic:
    return _desired(device)


async def send_desired(device: Device, doc: dict[str, Any], runtime: Runtime) -> int:
    """Claim the next desired-state version for `doc` and publish it retained; its version. The
    refusals as answers: 422 a document the contract refuses, 409 changed meanwhile, 503 stored but
    not sent (the broker link is down)."""
    try:
        version, topic, payload = await claim_desired(device.id, device.desired_version, doc)
    except ContractError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    except DesiredChanged as err:
        raise HTTPException(status.HTTP_409_CONFLICT, "the desired state changed meanwhile; retry") from err
    try:
        await runtime.link.publish(topic, payload, retain=True)
    except LinkError as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"stored as version {version} but not sent: {err}") from err
    return version


@router.put("/desired", responses={
    409: answer("the device is decommissioned, or the document changed meanwhile (retry)"),
    503: answer("stored, but the broker link is down: not sent yet")})
async def put_desired(device: DeviceDep, body: DesiredUpdate, runtime: RuntimeDep,
                      audit: Annotated[Auditor, acting(Permission.DESIRED_STATE)]) -> DesiredPublic:
    """Replace the desired-state document; it goes out retained, with the next version number."""
    _refuse_retired(device)
    # the version is claimed in the database first, so two writers never send the same number
    version = await send_desired(device, body.doc, runtime)
    await audit("device.desired", device.id, {"version": version})
    if "speaker" in (device.roles or []) and body.doc.get("speaker") != (device.desired_doc or {}).get("speaker"):
        # the schedule is the broadcasts' delivery's: it puts its own back (or keeps the new one) at once
        await mark_due([device.id], "desired replaced")
        if runtime.broadcasts is not None:
            runtime.broadcasts.nudge()
    await device.refresh_from_db()
    return _desired(device)


def _desired(device: Device) -> DesiredPublic:
    return DesiredPublic(version=device.desired_version, doc=device.desired_doc,
                         reported_version=device.reported_version, reported_status=device.reported_status)
