"""Fitting, removing and swapping the device on an asset (docs/assets.md, "Fit, remove, swap").

Pure of FastAPI: the API routes (fleet/api/routes/assets.py) and the pages call these. A refusal
raises an AssetError subclass carrying the HTTP status the API answers with and a sentence saying
why (which device, which asset). Every change is audited in the transaction that makes it.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from contract import ContractError, make_desired
from fleet.assets.models import Asset, Fitting
from fleet.broadcast.calendar import definition_of
from fleet.broadcast.delivery import mark_due
from fleet.broadcast.models import Broadcast, BroadcastStatus, BroadcastVersion
from fleet.broker_auth.accounts import AccountsError
from fleet.broker_auth.credentials import revoke_credentials
from fleet.desired import DesiredChanged, claim_desired
from fleet.ingest.link import LinkError
from fleet.models import RETIRED_STATUSES, AuditEntry, Device, DeviceStatus
from fleet.ops.models import Alert, AlertEvent, AlertState
from fleet.runtime import Runtime

RETIRED = RETIRED_STATUSES
CLAIM_TRIES = 3  # the new device's desired version moved meanwhile (a concurrent PUT): read again, at most 3 times


class AssetError(Exception):
    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AssetNotFound(AssetError):
    status = 404


class AssetConflict(AssetError):
    status = 409


class BrokerRefused(AssetError):
    status = 503


@dataclass(slots=True)
class SwapResult:
    asset_id: str
    old_device_id: str
    new_device_id: str
    desired_version: int | None  # the new device's desired version carrying the moved document
    pushed: bool  # the document reached the broker (retained); False: the swap is done, run it again to push
    credentials_revoked: int
    broadcasts_retargeted: list[int] = field(default_factory=list)
    alerts_resolved: list[int] = field(default_factory=list)
    already_done: bool = False
    note: str = ""


async def _audit(conn: BaseDBAsyncClient, actor: str, action: str, target: str, detail: dict[str, Any] | None,
                 source: str) -> None:
    await AuditEntry.create(using_db=conn, actor=actor[:80], action=action, target=target[:200], detail=detail,
                            source=source[:64])


async def get_asset(asset_id: str) -> Asset:
    asset = await Asset.get_or_none(id=asset_id)
    if asset is None:
        raise AssetNotFound(f"no asset {asset_id!r}")
    return asset


async def _fittable(device_id: str, asset_id: str, conn: BaseDBAsyncClient) -> Device:
    """The device, if it can go on `asset_id`: it exists, is not retired and is on no other asset."""
    device = await Device.filter(id=device_id).using_db(conn).first()
    if device is None:
        raise AssetNotFound(f"no device {device_id!r}")
    if device.status in RETIRED:
        raise AssetConflict(f"device {device_id!r} is {device.status.value}: it cannot be fitted")
    elsewhere = await Asset.filter(device_id=device_id).exclude(id=asset_id).using_db(conn).first()
    if elsewhere is not None:
        raise AssetConflict(f"device {device_id!r} is fitted to asset {elsewhere.id!r}: remove it there first")
    return device


def _place(device: Device, asset: Asset) -> list[str]:
    """The device takes the asset's place (ward, coordinates): the reports count a device in its ward."""
    changed = []
    for name in ("ward", "latitude", "longitude"):
        value = getattr(asset, name)
        if value not in (None, "") and getattr(device, name) != value:
            setattr(device, name, value)
            changed.append(name)
    return changed


async def fit(asset_id: str, device_id: str, actor: str, source: str = "") -> Asset:
    """Fit a device to an asset that carries none. 409 if the asset carries one or the device is elsewhere."""
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        asset = await Asset.select_for_update().using_db(conn).get_or_none(id=asset_id)
        if asset is None:
            raise AssetNotFound(f"no asset {asset_id!r}")
        if asset.device_id == device_id:
            return asset  # fitted already: the same request again changes nothing
        if asset.device_id is not None:
            raise AssetConflict(f"asset {asset_id!r} carries device {asset.device_id!r}: remove it or swap it")
        device = await _fittable(device_id, asset_id, conn)
        placed = _place(device, asset)
        if placed:
            await device.save(using_db=conn, update_fields=placed)
        asset.device_id, asset.updated_by = device_id, actor[:80]
        await asset.save(using_db=conn, update_fields=["device_id", "updated_by", "updated_at"])
        await Fitting.create(using_db=conn, asset_id=asset_id, device_id=device_id, fitted_at=now, reason="fitted",
                             by=actor[:80])
        await _audit(conn, actor, "asset.fit", asset_id, {"device_id": device_id}, source)
    return asset


async def remove(asset_id: str, actor: str, source: str = "") -> str | None:
    """Take the device off the asset (the device stays as it is). Returns the device removed, None if none was."""
    now = datetime.now(UTC)
    async with in_transaction() as conn:
        asset = await Asset.select_for_update().using_db(conn).get_or_none(id=asset_id)
        if asset is None:
            raise AssetNotFound(f"no asset {asset_id!r}")
        device_id = asset.device_id
        if device_id is None:
            return None
        await Fitting.filter(asset_id=asset_id, device_id=device_id, removed_at=None).using_db(conn).update(
            removed_at=now)
        asset.device_id, asset.updated_by = None, actor[:80]
        await asset.save(using_db=conn, update_fields=["device_id", "updated_by", "updated_at"])
        await _audit(conn, actor, "asset.remove", asset_id, {"device_id": device_id}, source)
    return device_id


def moved_document(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    """The new device's desired document: every section of the old device's (light program, config,
    speaker schedule) over whatever the new one had."""
    return {**(new or {}), **(old or {})}


async def _retarget(conn: BaseDBAsyncClient, old_id: str, new_id: str, actor: str, now: datetime) -> list[int]:
    """Broadcasts that can still play and name the old device: the new one in its place, as a new version."""
    changed = []
    can_play = Q(ends_at__isnull=True) | Q(ends_at__gt=now)
    for broadcast in await Broadcast.filter(can_play, status=BroadcastStatus.ACTIVE).using_db(conn).order_by("id"):
        devices = list(broadcast.targets.get("devices") or [])
        if old_id not in devices:
            continue
        devices = [new_id if d == old_id else d for d in devices]
        broadcast.targets = {**broadcast.targets, "devices": list(dict.fromkeys(devices))}
        broadcast.version += 1
        broadcast.updated_by = actor[:80]
        await broadcast.save(using_db=conn, update_fields=["targets", "version", "updated_by", "updated_at"])
        await BroadcastVersion.create(using_db=conn, broadcast=broadcast, version=broadcast.version,
                                      status=broadcast.status.value, definition=definition_of(broadcast).as_json(),
                                      created_by=actor[:80])
        changed.append(broadcast.id)
    return changed


async def _resolve_alerts(conn: BaseDBAsyncClient, device_id: str, actor: str, now: datetime) -> list[int]:
    resolved = []
    for alert in await Alert.filter(device_id=device_id, state__in=[AlertState.OPEN, AlertState.ACKNOWLEDGED]
                                    ).using_db(conn):
        if await Alert.filter(id=alert.id, live_key=alert.live_key).using_db(conn).update(
                state=AlertState.RESOLVED, live_key=None, resolved_at=now, resolved_by=actor[:80]):
            await AlertEvent.create(using_db=conn, alert_id=alert.id, at=now, action="resolved", actor=actor[:80],
                                    detail={"reason": "replaced"}, notify="none")
            resolved.append(alert.id)
    return resolved


async def swap(runtime: Runtime, asset_id: str, new_device_id: str, actor: str, source: str = "") -> SwapResult:
    """Swap the device on the asset for `new_device_id` (docs/assets.md, "The swap", its steps in order).

    Idempotent: the same swap asked again after it was done answers `already_done` and pushes the
    moved document again if the new device has not applied it."""
    asset = await get_asset(asset_id)
    old_id = asset.device_id
    if old_id == new_device_id:
        return await _again(runtime, asset_id, new_device_id)
    if old_id is None:
        raise AssetConflict(f"asset {asset_id!r} carries no device: fit {new_device_id!r} instead of swapping")
    old = await Device.get_or_none(id=old_id)
    if old is None:  # the asset names a device that is gone: a data fault, said as it is
        raise AssetConflict(f"asset {asset_id!r} names device {old_id!r}, which the fleet does not have")
    async with in_transaction() as conn:  # checks before the broker is touched
        await _fittable(new_device_id, asset_id, conn)
    # 1. the broker first (it is no part of the database's transaction): the old account removed,
    #    live credentials revoked. Idempotent; if the fleet stops after it, the same swap finishes.
    try:
        revoked = await revoke_credentials(runtime, old_id, actor, source)
    except AccountsError as err:
        raise BrokerRefused(f"the broker did not remove {old_id!r}'s account ({err}); nothing changed") from err
    # 2. one transaction: the document moved, the old device replaced, the fittings, broadcasts, alerts, audit
    now = datetime.now(UTC)
    for attempt in range(CLAIM_TRIES):
        try:
            async with in_transaction() as conn:
                locked = await Asset.select_for_update().using_db(conn).get(id=asset_id)
                if locked.device_id != old_id:
                    raise AssetConflict(f"asset {asset_id!r} changed meanwhile (it now carries "
                                        f"{locked.device_id!r}); look again")
                new = await _fittable(new_device_id, asset_id, conn)
                old = await Device.filter(id=old_id).using_db(conn).get()
                doc = moved_document(old.desired_doc, new.desired_doc)
                version: int | None = None
                publish: tuple[str, bytes] | None = None
                if doc:
                    version, topic, payload = await claim_desired(new.id, new.desired_version, doc, conn=conn)
                    publish = (topic, payload)
                placed = _place(new, locked)
                if placed:
                    await new.save(using_db=conn, update_fields=placed)
                await Device.filter(id=old_id).using_db(conn).update(status=DeviceStatus.REPLACED, online=False)
                await Fitting.filter(asset_id=asset_id, device_id=old_id, removed_at=None).using_db(conn).update(
                    removed_at=now, reason="swap")
                await Fitting.create(using_db=conn, asset_id=asset_id, device_id=new.id, fitted_at=now, reason="swap",
                                     by=actor[:80])
                locked.device_id, locked.updated_by = new.id, actor[:80]
                await locked.save(using_db=conn, update_fields=["device_id", "updated_by", "updated_at"])
                retargeted = await _retarget(conn, old_id, new.id, actor, now)
                resolved = await _resolve_alerts(conn, old_id, actor, now)
                if "speaker" in (old.roles or []) or "speaker" in (new.roles or []):
                    await mark_due([old_id, new.id], "asset swap", now, conn=conn)
                await _audit(conn, actor, "asset.swap", asset_id, {
                    "old_device_id": old_id, "new_device_id": new.id, "desired_version": version,
                    "credentials_revoked": revoked, "broadcasts": retargeted, "alerts": resolved}, source)
                await _audit(conn, actor, "device.replaced", old_id, {"asset_id": asset_id, "by": new.id}, source)
            break
        except DesiredChanged:
            if attempt == CLAIM_TRIES - 1:
                raise AssetConflict(f"the desired state of {new_device_id!r} kept changing; try the swap again"
                                    ) from None
        except ContractError as err:
            raise AssetConflict(f"the moved document breaks the contract: {err}") from err
    result = SwapResult(asset_id, old_id, new_device_id, version, False, revoked, retargeted, resolved)
    result.pushed, result.note = await _push(runtime, publish)
    if runtime.broadcasts is not None:
        runtime.broadcasts.nudge()
    return result


async def _push(runtime: Runtime, publish: tuple[str, bytes] | None) -> tuple[bool, str]:
    if publish is None:
        return True, "the old device had no desired document: nothing to move"
    try:
        await runtime.link.publish(*publish, retain=True)
    except LinkError as err:
        return False, f"stored but not sent ({err}): ask the same swap again to send it"
    return True, ""


async def _again(runtime: Runtime, asset_id: str, device_id: str) -> SwapResult:
    """The swap to `device_id` was done: say so, and push its document again if it is not applied."""
    fitting = await Fitting.filter(asset_id=asset_id, device_id=device_id, removed_at=None).order_by("-id").first()
    before = None
    if fitting is not None and fitting.reason == "swap":
        previous = await Fitting.filter(asset_id=asset_id, removed_at=fitting.fitted_at, reason="swap").first()
        before = previous.device_id if previous else None
    device = await Device.get(id=device_id)
    pushed, note = True, "already done"
    if device.desired_doc and (device.reported_version != device.desired_version
                               or device.reported_status != "applied"):
        pushed, why = await _push(runtime, make_desired(device.id, device.desired_version, device.desired_doc))
        note = "already done; the document was sent again" if pushed else f"already done; {why}"
    return SwapResult(asset_id, before or "", device_id, device.desired_version, pushed, 0, already_done=True,
                      note=note)


async def asset_of_device(device_id: str) -> tuple[Asset | None, bool]:
    """The asset the device is on now (True), else the last one it was on (False), else (None, False)."""
    now_on = await Asset.get_or_none(device_id=device_id)
    if now_on is not None:
        return now_on, True
    last = await Fitting.filter(device_id=device_id).order_by("-fitted_at", "-id").first()
    return (await Asset.get_or_none(id=last.asset_id) if last else None), False
