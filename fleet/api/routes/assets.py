"""Assets (docs/assets.md): the registry of poles, cabinets, masts and intersections; fitting,
removing and swapping their devices (fleet/assets/service.py); an asset's history and month
report across its devices (fleet/assets/history.py). READ to read; DEVICE_WRITE to change."""

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from contract import DEVICE_ID_PATTERN
from fleet.api.deps import LOGGED_IN, Auditor, Reader, RuntimeDep, acting
from fleet.api.errors import ValidationErrorPublic, answer
from fleet.api.routes.data import Moment
from fleet.api.routes.devices import view_of
from fleet.assets import history as asset_history
from fleet.assets import service
from fleet.assets.models import Asset, AssetKind, Fitting
from fleet.auth.roles import Permission
from fleet.ingest.silence import LivenessView
from fleet.models import AuditEntry, Device
from fleet.ops import history
from fleet.relay import reports

router = APIRouter(prefix="/api/assets", tags=["assets"], dependencies=[LOGGED_IN])

ASSET_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
ATTRIBUTE_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
ATTRIBUTES_MAX = 20
ATTRIBUTE_TEXT_MAX = 200
HISTORY_RANGE_MAX = timedelta(days=400)
TOTAL_HEADER = "X-Total-Count"

AssetId = Annotated[str, Path(pattern=ASSET_ID_PATTERN, description="lower-case asset id, 1-63 chars")]
DeviceIdField = Annotated[str, Field(pattern=f"^{DEVICE_ID_PATTERN}$", description="a device id")]
Scalar = str | int | float | bool | None


def _attributes(value: dict[str, Scalar]) -> dict[str, Scalar]:
    """At most 20 keys, each a short lower-case name; values scalars: text up to 200 characters, finite numbers."""
    if len(value) > ATTRIBUTES_MAX:
        raise ValueError(f"at most {ATTRIBUTES_MAX} attributes")
    for key, item in value.items():
        if isinstance(item, str) and len(item) > ATTRIBUTE_TEXT_MAX:
            raise ValueError(f"attribute {key!r}: text longer than {ATTRIBUTE_TEXT_MAX} characters")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"attribute {key!r}: not a finite number")
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) >= 2**53:
            raise ValueError(f"attribute {key!r}: integer out of range")
    return value


Attributes = Annotated[dict[Annotated[str, Field(pattern=ATTRIBUTE_KEY_PATTERN)], Scalar],
                       AfterValidator(_attributes),
                       Field(description="lamp_type, lamp_w, speaker_w, …: at most 20 keys, scalar values",
                             examples=[{"lamp_type": "LED", "lamp_w": 120}])]
Latitude = Annotated[float | None, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float | None, Field(ge=-180, le=180, allow_inf_nan=False)]


class AssetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=ASSET_ID_PATTERN, description="lower-case id, e.g. pole-tan-phu-0042")
    kind: AssetKind
    name: str = Field(default="", max_length=120)
    ward: str = Field(default="", max_length=80)
    address: str = Field(default="", max_length=200)
    latitude: Latitude = None
    longitude: Longitude = None
    attributes: Attributes = Field(default_factory=dict)


class AssetUpdate(BaseModel):
    """Only the fields sent change; latitude/longitude may be null (position unknown)."""

    model_config = ConfigDict(extra="forbid")
    kind: AssetKind | None = None
    name: str | None = Field(default=None, max_length=120)
    ward: str | None = Field(default=None, max_length=80)
    address: str | None = Field(default=None, max_length=200)
    latitude: Latitude = None
    longitude: Longitude = None
    attributes: Attributes | None = None


class FittedDevice(BaseModel):
    id: str
    status: str
    state: str
    online: bool
    last_seen_at: datetime | None
    fw: str | None


class AssetPublic(BaseModel):
    id: str
    kind: AssetKind
    name: str
    ward: str
    address: str
    latitude: float | None
    longitude: float | None
    attributes: dict[str, Any]
    device_id: str | None
    device: FittedDevice | None = Field(default=None, description="the device fitted now, with its presence")
    created_at: datetime
    updated_at: datetime
    updated_by: str


class FittingPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    device_id: str
    fitted_at: datetime
    removed_at: datetime | None
    reason: str
    by: str


class FitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: DeviceIdField


class SwapBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    new_device_id: DeviceIdField


class SwapPublic(BaseModel):
    asset_id: str
    old_device_id: str
    new_device_id: str
    desired_version: int | None
    pushed: bool = Field(description="the moved document reached the broker; false: ask the same swap again")
    credentials_revoked: int
    broadcasts_retargeted: list[int]
    alerts_resolved: list[int]
    already_done: bool
    note: str


def _public(asset: Asset, device: Device | None, view: LivenessView) -> AssetPublic:
    fitted = None
    if device is not None:
        fitted = FittedDevice(id=device.id, status=device.status.value, state=view.judge(device).state.value,
                              online=device.online, last_seen_at=device.last_seen_at, fw=device.fw)
    return AssetPublic(id=asset.id, kind=asset.kind, name=asset.name, ward=asset.ward, address=asset.address,
                       latitude=asset.latitude, longitude=asset.longitude, attributes=asset.attributes or {},
                       device_id=asset.device_id, device=fitted, created_at=asset.created_at,
                       updated_at=asset.updated_at, updated_by=asset.updated_by)


async def public_of(asset: Asset, view: LivenessView) -> AssetPublic:
    device = await Device.get_or_none(id=asset.device_id) if asset.device_id else None
    return _public(asset, device, view)


def _refused(err: service.AssetError) -> HTTPException:
    return HTTPException(err.status, err.message)


async def get_asset(asset_id: AssetId) -> Asset:
    try:
        return await service.get_asset(asset_id)
    except service.AssetError as err:
        raise _refused(err) from err


AssetDep = Annotated[Asset, Depends(get_asset)]
Writer = Annotated[Auditor, acting(Permission.DEVICE_WRITE)]


@router.get("", responses={200: {"headers": {TOTAL_HEADER: {"description": "how many match, over all pages",
                                                            "schema": {"type": "integer"}}}}})
async def list_assets(_: Reader, runtime: RuntimeDep, response: Response,
                      ward: Annotated[str | None, Query(max_length=80)] = None,
                      kind: AssetKind | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                      offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[AssetPublic]:
    """One page of the assets, by id, with the device fitted to each; X-Total-Count says how many match."""
    query = Asset.all()
    if ward is not None:
        query = query.filter(ward=ward)
    if kind is not None:
        query = query.filter(kind=kind)
    assets = await query.order_by("id").offset(offset).limit(limit)
    response.headers[TOTAL_HEADER] = str(await query.count())
    devices = {d.id: d for d in await Device.filter(id__in=[a.device_id for a in assets if a.device_id])}
    view = view_of(runtime)
    return [_public(a, devices.get(a.device_id or ""), view) for a in assets]


@router.post("", status_code=status.HTTP_201_CREATED, responses={409: answer("an asset with this id exists")})
async def create_asset(body: AssetCreate, runtime: RuntimeDep, audit: Writer) -> AssetPublic:
    try:
        asset = await Asset.create(**body.model_dump(), updated_by=audit.actor)
    except IntegrityError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, f"asset {body.id!r} already exists") from err
    await audit("asset.create", asset.id, body.model_dump(mode="json"))
    return await public_of(asset, view_of(runtime))


@router.get("/{asset_id}")
async def get_one(asset: AssetDep, _: Reader, runtime: RuntimeDep) -> AssetPublic:
    return await public_of(asset, view_of(runtime))


@router.patch("/{asset_id}")
async def update_asset(asset: AssetDep, body: AssetUpdate, runtime: RuntimeDep, audit: Writer) -> AssetPublic:
    changes = body.model_dump(exclude_unset=True)
    for name in ("kind", "name", "ward", "address", "attributes"):
        if name in changes and changes[name] is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name} cannot be null")
    if not changes:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "nothing to update")
    asset.update_from_dict({**changes, "updated_by": audit.actor[:80]})
    await asset.save()
    await audit("asset.update", asset.id, body.model_dump(mode="json", exclude_unset=True))
    return await public_of(asset, view_of(runtime))


@router.delete("/{asset_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={409: answer("the asset carries a device: remove it first")})
async def delete_asset(asset: AssetDep, audit: Writer) -> Response:
    """Delete an asset that carries no device, with its fittings (the devices keep their own history)."""
    async with in_transaction() as conn:
        if await Asset.filter(id=asset.id, device_id__isnull=True).using_db(conn).delete() == 0:
            raise HTTPException(status.HTTP_409_CONFLICT,
                                f"asset {asset.id!r} carries device {asset.device_id!r}: remove it first")
        fittings = await Fitting.filter(asset_id=asset.id).using_db(conn).delete()
        await AuditEntry.create(using_db=conn, actor=audit.actor, action="asset.delete", target=asset.id,
                                detail={"fittings": fittings}, source=audit.source)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{asset_id}/fit", responses={
    404: answer("no such asset or device"),
    409: answer("the asset carries another device, the device is on another asset, or it is retired")})
async def fit_device(asset: AssetDep, body: FitBody, runtime: RuntimeDep, audit: Writer) -> AssetPublic:
    """Fit a device to an asset carrying none (the same request again changes nothing); the device
    takes the asset's ward and coordinates."""
    try:
        fitted = await service.fit(asset.id, body.device_id, audit.actor, audit.source)
    except service.AssetError as err:
        raise _refused(err) from err
    return await public_of(fitted, view_of(runtime))


@router.post("/{asset_id}/remove")
async def remove_device(asset: AssetDep, runtime: RuntimeDep, audit: Writer) -> AssetPublic:
    """Take the device off the asset; the device itself is not changed (decommission it separately)."""
    try:
        await service.remove(asset.id, audit.actor, audit.source)
    except service.AssetError as err:
        raise _refused(err) from err
    return await public_of(await service.get_asset(asset.id), view_of(runtime))


@router.post("/{asset_id}/swap", responses={
    404: answer("no such asset or new device"),
    409: answer("the asset carries no device, the new device is on another asset or retired, or the asset "
                "changed meanwhile"),
    503: answer("the broker did not remove the old device's account: nothing changed")})
async def swap_device(asset: AssetDep, body: SwapBody, runtime: RuntimeDep, audit: Writer) -> SwapPublic:
    """Swap the asset's device for `new_device_id`: the old device's credentials revoked (its broker
    account removed), then in one transaction its desired document moved to the new device (a new
    version), the old one marked `replaced`, the fittings closed and opened, broadcasts naming the old
    device retargeted, its live alerts resolved (reason `replaced`), audited; then the document pushed
    (retained). Asked again once done, it answers `already_done` (and pushes again if not applied)."""
    try:
        done = await service.swap(runtime, asset.id, body.new_device_id, audit.actor, audit.source)
    except service.AssetError as err:
        raise _refused(err) from err
    return SwapPublic(asset_id=done.asset_id, old_device_id=done.old_device_id, new_device_id=done.new_device_id,
                      desired_version=done.desired_version, pushed=done.pushed,
                      credentials_revoked=done.credentials_revoked, broadcasts_retargeted=done.broadcasts_retargeted,
                      alerts_resolved=done.alerts_resolved, already_done=done.already_done, note=done.note)


@router.get("/{asset_id}/fittings")
async def fittings(asset: AssetDep, _: Reader,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[FittingPublic]:
    """The devices the asset carried, newest first."""
    rows = await Fitting.filter(asset_id=asset.id).order_by("-fitted_at", "-id").limit(limit)
    return [FittingPublic.model_validate(row) for row in rows]


@router.get("/{asset_id}/history",
            responses={422: {"model": ValidationErrorPublic, "description": "a bad range, field or points"}})
async def asset_history_route(
    asset: AssetDep, _: Reader,
    start: Annotated[Moment | None, Query(alias="from", description="default: 7 days before 'to'")] = None,
    end: Annotated[Moment | None, Query(alias="to", description="default: now")] = None,
    source: Literal["health", "telemetry"] | None = None,
    field: Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")] = None,
    role: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z0-9_\-]+$")] = None,
    points: Annotated[int, Query(ge=2, le=history.POINTS_MAX)] = 200,
) -> dict[str, Any]:
    """The asset's history over [from, to), stitched from the devices fitted to it: each fitting
    (cut to the range) with its device's newest events over its own interval; with `source` and
    `field`, that field charted from each device over its interval only (`points`, each naming its
    device). `gaps`: time after the first fitting that no device covered."""
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=7)
    if not start < end or end - start > HISTORY_RANGE_MAX:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"'from' must be before 'to', at most {HISTORY_RANGE_MAX.days} days apart")
    if (source is None) != (field is None):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give source and field together")
    found = await asset_history.pieces(asset.id, start, end)
    out: dict[str, Any] = {"asset_id": asset.id, "start": start, "end": end, "pieces": [], "points": None,
                           "gaps": [{"start": a, "end": b} for a, b in asset_history.gaps(found, start, end)]}
    for piece in found:
        out["pieces"].append({"device_id": piece.fitting.device_id, "start": piece.start, "end": piece.end,
                              "fitted_at": piece.fitting.fitted_at, "removed_at": piece.fitting.removed_at,
                              "reason": piece.fitting.reason, "events": await asset_history.events(piece)})
    if source is not None and field is not None:
        known = await asset_history.known_fields(found, source, role)
        if field not in known:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"no such numeric field in the {source} of this asset's devices; they have: "
                                + (", ".join(known[:40]) or "none yet"))
        try:
            out["points"] = await asset_history.series(found, source, field, points, role)
        except history.HistoryError as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    return out


@router.get("/{asset_id}/report",
            responses={422: {"model": ValidationErrorPublic, "description": "month is not YYYY-MM"}})
async def asset_report(asset: AssetDep, _: Reader, runtime: RuntimeDep,
                       month: Annotated[str, Query(max_length=16, description="YYYY-MM, the city's calendar")]
                       ) -> dict[str, Any]:
    """The month of the asset across its devices: each device's lamp hours, energy (the light role's
    counters, the city report's rule) and lamp failures over its own time on the asset, the program
    it carried (a digest of its desired `light`), the totals, the gaps, and `program_continuous`."""
    try:
        chosen = reports.parse_month(month, ZoneInfo(runtime.settings.timezone))
    except reports.ReportError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    return await asset_history.asset_report(asset.id, chosen, datetime.now(UTC))
