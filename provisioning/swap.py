"""`provision swap --asset X (--port P | --device-id ID)`: replace the device on an asset (docs/assets.md).

With --port the new board is flashed by `provision flash`'s own handler (the same code path, the
same options: a new device id, registered, online), then the fleet's swap API moves the old
device's program to it and retires the old one. With --device-id the board was flashed before.
The lines printed: `before: …`, the flash's own line, `swap: …`, `after: …`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from provisioning.errors import FleetRefused, ProvisionError
from provisioning.fleet_api import FleetClient
from provisioning.progress import Reporter

if TYPE_CHECKING:
    from provisioning.flash import FlashResult

# flash's options the swap does not take from it: its own --port/--device-id, and a new id always
SWAP_OWN = frozenset({"help", "port", "device_id", "new_identity", "batch"})
# the kind of ESP32 node a swap flashes when --kind is not given, by the asset's kind
KIND_OF_ASSET = {"pole": "light", "speaker_mast": "speaker", "cabinet": "sensor", "intersection": "sensor"}
APPLY_POLL_S = 0.5

Flash = Callable[..., int]


def _device_line(device: dict[str, Any] | None) -> str:
    if not device:
        return "no device"
    return f"{device['id']} ({device.get('state')}, status {device.get('status')}, fw {device.get('fw') or '?'})"


def _kind(args: argparse.Namespace, asset: dict[str, Any], old: dict[str, Any] | None) -> str:
    if args.kind:
        return str(args.kind)
    roles = [r for r in (old or {}).get("roles") or [] if r in ("light", "speaker", "sensor")]
    if roles:
        return str(roles[0])
    return KIND_OF_ASSET.get(str(asset.get("kind")), "sim")


def do_swap_with(args: argparse.Namespace, reporter: Reporter, fleet: FleetClient | None, flash: Flash) -> int:
    if fleet is None:
        raise ProvisionError("provision swap asks the fleet: give --fleet URL (or PROVISION_FLEET_URL) and --token")
    with fleet:
        asset = fleet.get_asset(args.asset)
        old_id = asset.get("device_id")
        old = fleet.get_device(old_id) if old_id else None
        old_desired = fleet.get_desired(old_id) if old_id else None
        program = f", desired v{old_desired['version']}" if old_desired and old_desired.get("doc") else ""
        print(f"before: asset {asset['id']} ({asset['kind']}, ward {asset['ward'] or '-'}) carries "
              f"{_device_line(old)}{program}", flush=True)
        if old_id is None:
            raise ProvisionError(f"asset {asset['id']} carries no device: fit one (POST /api/assets/{asset['id']}/fit)"
                                 " instead of swapping")
        if args.device_id:
            new_id = str(args.device_id)
            fleet.get_device(new_id)  # a 404 says "no such device" before anything changes
        else:
            new_id = _flash_new_board(args, reporter, asset, old, flash)
        try:
            done = fleet.swap_asset(asset["id"], new_id)
        except FleetRefused as err:
            raise ProvisionError(f"the board {new_id} is ready but the swap was refused: {err.detail}; "
                                 f"run `provision swap --asset {asset['id']} --device-id {new_id}` once it is "
                                 "resolved") from err
        said = "already done" if done["already_done"] else (
            f"{done['old_device_id']} replaced, {done['credentials_revoked']} credential(s) revoked, "
            f"{len(done['broadcasts_retargeted'])} broadcast(s) and {len(done['alerts_resolved'])} alert(s) moved")
        print(f"swap: {said}; {new_id} desired v{done['desired_version']}"
              f"{'' if done['pushed'] else ' (NOT SENT: ' + done['note'] + ')'}", flush=True)
        applied = _wait_applied(fleet, new_id, done.get("desired_version"), args.wait)
        after = fleet.get_asset(asset["id"])
        new = fleet.get_device(new_id)
        old_now = fleet.get_device(done["old_device_id"]) if done["old_device_id"] else None
        print(f"after: asset {after['id']} carries {_device_line(new)}, program {applied}; "
              f"old {_device_line(old_now)}", flush=True)
    return 0


def _flash_new_board(args: argparse.Namespace, reporter: Reporter, asset: dict[str, Any],
                     old: dict[str, Any] | None, flash: Flash) -> str:
    """`provision flash` on the new board, as the technician would run it, with a new id; its id."""
    if len(args.port) > 1:
        raise ProvisionError("a swap puts one new board on the asset: give one --port")
    args.kind = _kind(args, asset, old)
    args.batch = None
    args.new_identity, args.device_id = True, None
    args.site = args.site or asset["id"]
    args.ward = args.ward or asset.get("ward") or ""
    results: list[FlashResult] = []
    flash(args, reporter, results)
    if not results:
        raise ProvisionError("the new board was not flashed")
    return results[0].device_id


def _wait_applied(fleet: FleetClient, device_id: str, version: int | None, wait_s: float) -> str:
    """"applied vN" once the device reports the moved document, or what it reports at the deadline."""
    if version is None:
        return "none to move"
    deadline = time.monotonic() + wait_s
    while True:
        desired = fleet.get_desired(device_id)
        reported = desired.get("reported_version")
        if reported == version and desired.get("reported_status") == "applied":
            return f"applied v{version}"
        if time.monotonic() >= deadline:
            return (f"v{version} NOT applied yet (the device reports v{reported} "
                    f"{desired.get('reported_status') or '-'})")
        time.sleep(APPLY_POLL_S)
