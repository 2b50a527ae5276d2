"""Child devices of a Pi (third-party cameras, conference endpoints): list, proposals, adopt, forget.

Adopting a child adds it to the Pi's desired state (`doc.children.children`, docs/edge-roles.md,
"children"): the Pi checks it with its own rules (and reports `rejected` with the reason when it
cannot watch it) and starts a prober for it. Forgetting removes it from the desired state and
deletes what the fleet stored of it.
"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from fleet.api.deps import LOGGED_IN, Auditor, DeviceDep, Reader, RuntimeDep, acting
from fleet.api.errors import answer
from fleet.api.routes.control import send_desired
from fleet.api.routes.devices import view_of
from fleet.auth.roles import Permission
from fleet.children.models import ChildChange, ChildDevice
from fleet.children.presence import ChildPresence
from fleet.children.queries import children_of
from fleet.models import Device, DeviceStatus, EventRecord

router = APIRouter(prefix="/api/devices/{device_id}/children", tags=["child devices"], dependencies=[LOGGED_IN])

CHILD_ID = r"^[a-z0-9][a-z0-9-]{1,31}$"
MAX_CHILDREN = 64  # the Pi's bound (edge/roles/children/settings.py): more is refused here already
PROPOSALS_MAX = 50
ChildIdPath = Annotated[str, Path(pattern=CHILD_ID)]


class ChildPublic(BaseModel):
    child_id: str
    kind: str | None
    presence: ChildPresence  # online / offline / unknown (the parent not heard, or never said)
    state: str | None  # the last health's state: ok, frozen, no_frames
    state_since: datetime | None
    fw: str | None
    hw: str | None
    last_health: dict[str, Any] | None
    last_health_at: datetime | None
    last_death_reason: str | None
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    adopted: bool  # in the Pi's desired state (else from its config file, or forgotten)


class ChildAdopt(BaseModel):
    """A child for the Pi to watch. Only the fields given are sent; the Pi fills in its defaults
    and checks the bounds (docs/edge-roles.md, "children")."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=CHILD_ID)
    kind: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$")
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(default=None, min_length=1, max_length=8)
    rtsp_url: str | None = Field(default=None, min_length=8, max_length=500, pattern=r"^rtsps?://")
    icmp: bool | None = None
    period_s: float | None = Field(default=None, ge=0.2, le=3600)
    frame_within_s: float | None = Field(default=None, gt=0, le=600)
    frozen_after_s: float | None = Field(default=None, gt=0, le=3600)


class Proposal(BaseModel):
    address: str
    host: str | None
    kind: str | None
    xaddrs: list[str]
    scopes: list[str]
    at: datetime


class ChildHistory(BaseModel):
    at: datetime
    what: str
    detail: str | None


def _adopted(device: Device) -> list[dict[str, Any]]:
    part = (device.desired_doc or {}).get("children")
    items = part.get("children") if isinstance(part, dict) else None
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


@router.get("")
async def list_children(device: DeviceDep, runtime: RuntimeDep, _: Reader) -> list[ChildPublic]:
    """The Pi's children, each with its presence as the fleet shows it (fleet/children/presence.py)."""
    parent = view_of(runtime).judge(device).state
    adopted = {c.get("id") for c in _adopted(device)}
    rows = await children_of(device.id, parent)
    found = [ChildPublic(child_id=r.child_id, kind=r.kind, presence=presence, state=r.state,
                         state_since=r.state_since, fw=r.fw, hw=r.hw, last_health=r.last_health,
                         last_health_at=r.last_health_at, last_death_reason=r.last_death_reason,
                         first_seen_at=r.first_seen_at, last_seen_at=r.last_seen_at, adopted=r.child_id in adopted)
             for r, presence in rows]
    heard = {r.child_id for r, _ in rows}
    found += [ChildPublic(child_id=str(c["id"]), kind=c.get("kind"), presence=ChildPresence.UNKNOWN, state=None,
                          state_since=None, fw=None, hw=None, last_health=None, last_health_at=None,
                          last_death_reason=None, first_seen_at=None, last_seen_at=None, adopted=True)
              for c in _adopted(device) if c.get("id") not in heard]  # adopted, not reported yet
    return found


@router.get("/proposals")
async def list_proposals(device: DeviceDep, _: Reader) -> list[Proposal]:
    """Devices the Pi found by WS-Discovery (events `child_proposed`), newest first, one per address,
    leaving out the hosts it already watches by adoption."""
    watched = {c.get("host") for c in _adopted(device)}
    rows = await (EventRecord.filter(device_id=device.id, type="child_proposed").order_by("-at")
                  .limit(PROPOSALS_MAX * 4).values_list("data", "at"))
    seen: set[str] = set()
    found: list[Proposal] = []
    for data, at in rows:
        if not isinstance(data, dict) or not isinstance(data.get("address"), str) or data["address"] in seen:
            continue
        seen.add(data["address"])
        if data.get("host") in watched:
            continue
        found.append(Proposal(address=data["address"], host=data.get("host"), kind=data.get("kind"),
                              xaddrs=[x for x in data.get("xaddrs") or [] if isinstance(x, str)],
                              scopes=[x for x in data.get("scopes") or [] if isinstance(x, str)], at=at))
        if len(found) >= PROPOSALS_MAX:
            break
    return found


@router.get("/{child_id}/history")
async def child_history(device: DeviceDep, child_id: ChildIdPath, _: Reader) -> list[ChildHistory]:
    """Its births, deaths and changes of state, newest first (the fleet keeps the last 100)."""
    rows = await ChildChange.filter(parent_id=device.id, child_id=child_id).order_by("-at", "-id").limit(100)
    return [ChildHistory(at=r.at, what=r.what, detail=r.detail) for r in rows]


def _with_children(device: Device, children: list[dict[str, Any]]) -> dict[str, Any]:
    doc = dict(device.desired_doc or {})
    part = doc.get("children")
    doc["children"] = {**(part if isinstance(part, dict) else {}), "children": children}
    return doc


@router.post("", status_code=status.HTTP_201_CREATED, responses={
    409: answer("the device is decommissioned or does not run the role children (its birth says), the child "
                "is adopted already, the Pi has MAX_CHILDREN, or the desired state changed meanwhile (retry)"),
    503: answer("stored, but the broker link is down: not sent yet")})
async def adopt_child(device: DeviceDep, body: ChildAdopt, runtime: RuntimeDep,
                      audit: Annotated[Auditor, acting(Permission.DEVICE_WRITE)]) -> ChildPublic:
    """Add the child to the Pi's desired state: the Pi starts watching it."""
    if device.status == DeviceStatus.DECOMMISSIONED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"device {device.id!r} is decommissioned")
    if device.roles and "children" not in device.roles:  # its birth lists its roles: none watches children
        raise HTTPException(status.HTTP_409_CONFLICT, f"device {device.id!r} does not run the role children")
    children = _adopted(device)
    if any(c.get("id") == body.id for c in children):
        raise HTTPException(status.HTTP_409_CONFLICT, f"child {body.id!r} is adopted already")
    if len(children) >= MAX_CHILDREN:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the Pi watches at most {MAX_CHILDREN} children")
    child = body.model_dump(exclude_none=True)
    version = await send_desired(device, _with_children(device, [*children, child]), runtime)
    await audit("device.child_adopt", device.id, {"child": body.id, "version": version})
    return ChildPublic(child_id=body.id, kind=body.kind, presence=ChildPresence.UNKNOWN, state=None,
                       state_since=None, fw=None, hw=None, last_health=None, last_health_at=None,
                       last_death_reason=None, first_seen_at=None, last_seen_at=None, adopted=True)


@router.delete("/{child_id}", status_code=status.HTTP_204_NO_CONTENT, responses={
    404: answer("the Pi has no such child"),
    409: answer("the desired state changed meanwhile (retry)"),
    503: answer("stored, but the broker link is down: not sent yet")})
async def forget_child(device: DeviceDep, child_id: ChildIdPath, runtime: RuntimeDep,
                       audit: Annotated[Auditor, acting(Permission.DEVICE_WRITE)]) -> Response:
    """Remove the child from the Pi's desired state (the Pi stops watching it) and delete its rows.
    A child from the Pi's config file comes back with its next message."""
    children = _adopted(device)
    kept = [c for c in children if c.get("id") != child_id]
    deleted = await ChildDevice.filter(parent_id=device.id, child_id=child_id).delete()
    await ChildChange.filter(parent_id=device.id, child_id=child_id).delete()
    if len(kept) == len(children) and not deleted:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no child {child_id!r} of {device.id!r}")
    version = await send_desired(device, _with_children(device, kept), runtime) if len(kept) != len(children) else None
    await audit("device.child_forget", device.id, {"child": child_id, "version": version})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
