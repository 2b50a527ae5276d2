"""A rollout's statuses and a device's state in it, with the rule for a device's report. Pure.

The device states are docs/ota.md's per-device list: `pending` (not offered yet), `offered`
(the fleet published the offer) and then the `ota/progress` statuses the device reports.
"""

from enum import StrEnum


class RolloutStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    ABORTED = "aborted"
    DONE = "done"


class DeviceState(StrEnum):
    PENDING = "pending"
    OFFERED = "offered"
    RECEIVED = "received"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


ORDER = {state: index for index, state in enumerate(DeviceState)}
TERMINAL = frozenset({DeviceState.CONFIRMED, DeviceState.FAILED, DeviceState.ROLLED_BACK})
BAD = frozenset({DeviceState.FAILED, DeviceState.ROLLED_BACK})
IN_FLIGHT = frozenset(set(DeviceState) - TERMINAL - {DeviceState.PENDING})
REPORTED = frozenset(set(DeviceState) - {DeviceState.PENDING, DeviceState.OFFERED})
# failures the fleet decides by itself (no report in time): a late report from the device wins
FLEET_REASONS = ("timeout", "offline")
REASON_MAX = 200  # characters of a reason kept


def reported_state(status: str) -> DeviceState | None:
    """The state a progress `status` names, or None for one that is not in docs/ota.md."""
    try:
        state = DeviceState(status)
    except ValueError:
        return None
    return state if state in REPORTED else None


def accepts(current: DeviceState, reason: str | None, new: DeviceState) -> bool:
    """Whether a device's report moves its state: forward along the list (a repeat updates `pct`
    and the reason); a terminal state stays, except `confirmed` then `rolled_back` (a rollback
    carried out) and a failure the fleet decided (`timeout`, `offline`), which a report replaces."""
    if current in TERMINAL:
        if current is DeviceState.CONFIRMED and new is DeviceState.ROLLED_BACK:
            return True
        return current is DeviceState.FAILED and (reason or "").split(":")[0] in FLEET_REASONS
    return ORDER[new] >= ORDER[current]


def reason_of(detail: object) -> str | None:
    """`code: message` from a report's `detail` ({"reason", "msg"} or text), cut to REASON_MAX."""
    if isinstance(detail, dict):
        code, msg = detail.get("reason"), detail.get("msg")
        parts = [str(p) for p in (code, msg) if isinstance(p, str | int) and not isinstance(p, bool)]
        text = ": ".join(parts)
    elif isinstance(detail, str):
        text = detail
    else:
        return None
    return text[:REASON_MAX] or None
