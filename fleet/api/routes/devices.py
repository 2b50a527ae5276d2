"""The device registry: create, list, get, update, decommission; each with the fleet's verdict on
its connection (fleet/liveness.py)."""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BeforeValidator
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from fleet.api.deps import LOGGED_IN, Auditor, DeviceDep, Reader, RuntimeDep, acting
from fleet.api.errors import answer
from fleet.api.schemas import TAG_PATTERN, DeviceCreate, DevicePublic, DeviceUpdate, Kind
from fleet.auth.roles import Permission
from fleet.broker_auth.accounts import AccountsError
from fleet.broker_auth.credentials import revoke_credentials
from fleet.device_queries import open_gaps, with_tag
from fleet.ingest.silence import LivenessView
from fleet.liveness import State
from fleet.models import Device, DeviceStatus, SeqGap

router = APIRouter(prefix="/api/devices", tags=["devices"], dependencies=[LOGGED_IN])


def view_of(runtime: RuntimeDep) -> LivenessView:
    return LivenessView.of(runtime.link, runtime.settings)


async def to_public(device: Device, view: LivenessView, gaps: int | None = None) -> DevicePublic:
    """The device as the API shows it; `gaps`: its open gaps when the caller counted them already."""
    if gaps is None:
        gaps = await SeqGap.filter(device_id=device.id, open=True).count()
    verdict = view.judge(device)
    return DevicePublic.model_validate(device).model_copy(
        update={"open_gaps": gaps, "state": verdict.state, "state_reason": verdict.reason})


_STATES = ", ".join(s.value for s in State if s.value not in {d.value for d in DeviceStatus})


def _registry_status(value: Any) -> Any:
    """`?status=stale` is the question of a person who meant `state`: say so instead of listing enums."""
    if isinstance(value, str) and value in {s.value for s in State} - {d.value for d in DeviceStatus}:
        raise ValueError(f"a connection state ({_STATES}) is filtered with state=, not status=; status is the "
                         "registry status: registered, discovered, active or decommissioned")
    return value


@router.post("", status_code=status.HTTP_201_CREATED,
             responses={409: answer("a device with this id already exists (and is not just discovered), "
                                    "or the id is one of the fleet's own broker accounts")})
async def create_device(body: DeviceCreate, runtime: RuntimeDep,
                        audit: Annotated[Auditor, acting(Permission.DEVICE_WRITE)]) -> DevicePublic:
    if runtime.reserves(body.id):
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"device id {body.id!r} is reserved for the fleet's own broker connections")
    existing = await Device.get_or_none(id=body.id)
    if existing is not None and existing.status != DeviceStatus.DISCOVERED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"device {body.id!r} already exists")
    fields: dict[str, Any] = body.model_dump()
    if existing is not None:  # it was heard from before it was registered: adopt it
        existing.update_from_dict({k: v for k, v in fields.items() if k != "id"})
        existing.status = DeviceStatus.ACTIVE if existing.session is not None else DeviceStatus.REGISTERED
        await existing.save()
        await audit("device.adopt", body.id, fields)
        return await to_public(existing, view_of(runtime))
    try:
        device = await Device.create(**fields, status=DeviceStatus.REGISTERED)
    except IntegrityError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, f"device {body.id!r} already exists") from err
    await audit("device.create", body.id, fields)
    return await to_public(device, view_of(runtime))


@dataclass(frozen=True, slots=True)
class DeviceFilters:
    """The device list's filters (`GET /api/devices`); the GIS layer and the map take the same."""

    kind: str | None = None
    ward: str | None = None
    status: DeviceStatus | None = None
    state: State | None = None
    tag: str | None = None
    online: bool | None = None

    def select(self, view: LivenessView) -> QuerySet[Device]:
        """The devices that match every filter given, as one query (not yet run, not ordered)."""
        query = Q()
        if self.kind:
            query &= Q(kind=self.kind)
        if self.ward:
            query &= Q(ward=self.ward)
        if self.status:
            query &= Q(status=self.status)
        if self.online is not None:
            query &= Q(online=self.online)
        selected = Device.filter(query)
        if self.state is not None:
            selected = view.filter(selected, self.state)
        if self.tag:
            selected = with_tag(selected, self.tag)
        return selected


def device_filters(
    kind: Kind | None = None,
    ward: Annotated[str | None, Query(max_length=80)] = None,
    status_: Annotated[DeviceStatus | None, BeforeValidator(_registry_status),
                       Query(alias="status", description="the registry status")] = None,
    state: Annotated[State | None, Query(description="the fleet's verdict on the connection, as in each "
                                                     "device's `state` (docs/fleet.md, \"Liveness\")")] = None,
    tag: Annotated[str | None, Query(description="devices carrying this tag", pattern=TAG_PATTERN)] = None,
    online: Annotated[bool | None, Query(description="the raw presence flag (`state` is what to show)")] = None,
) -> DeviceFilters:
    return DeviceFilters(kind, ward, status_, state, tag, online)


Filters = Annotated[DeviceFilters, Depends(device_filters)]
TOTAL_HEADER = "X-Total-Count"


@router.get("", responses={200: {"headers": {TOTAL_HEADER: {
    "description": "how many devices match the filters, over all pages", "schema": {"type": "integer"}}}}})
async def list_devices(
    _: Reader,
    runtime: RuntimeDep,
    response: Response,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[DevicePublic]:
    """One page of the devices that match every filter given, by id; the `X-Total-Count` header
    says how many match in all. At most three statements whatever the page or the fleet's size:
    the page, the count and the open gaps of the page's devices."""
    view = view_of(runtime)
    selected = filters.select(view)
    devices = await selected.order_by("id").offset(offset).limit(limit)
    # the count only when the page does not tell it: a short page that has rows ends the list
    total = offset + len(devices) if 0 < len(devices) < limit else await selected.count()
    response.headers[TOTAL_HEADER] = str(total)
    gaps = await open_gaps([d.id for d in devices])
    return [await to_public(d, view, gaps.get(d.id, 0)) for d in devices]


@router.get("/{device_id}")
async def get_device(device: DeviceDep, _: Reader, runtime: RuntimeDep) -> DevicePublic:
    return await to_public(device, view_of(runtime))


@router.patch("/{device_id}")
async def update_device(device: DeviceDep, body: DeviceUpdate, runtime: RuntimeDep,
                        audit: Annotated[Auditor, acting(Permission.DEVICE_WRITE)]) -> DevicePublic:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "nothing to update")
    device.update_from_dict(changes)
    await device.save()
    await audit("device.update", device.id, changes)
    return await to_public(device, view_of(runtime))


@router.post("/{device_id}/decommission",
             responses={503: answer("the broker did not remove the device's account; nothing changed")})
async def decommission_device(device: DeviceDep, runtime: RuntimeDep,
                              audit: Annotated[Auditor, acting(Permission.DEVICE_DECOMMISSION)]) -> DevicePublic:
    """Retire a device: its credentials are revoked, it keeps its history, its messages are refused."""
    try:
        await revoke_credentials(runtime, device.id, audit.actor)
    except AccountsError as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"the broker did not remove the account: {err}") from err
    device.status = DeviceStatus.DECOMMISSIONED
    device.online = False
    await device.save()
    await audit("device.decommission", device.id)
    return await to_public(device, view_of(runtime))
