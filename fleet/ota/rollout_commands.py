"""Making a rollout and what people do to it: pause, resume, abort, roll back a phase.

Free of FastAPI: fleet/api/routes/rollouts.py turns `RolloutRefused` into an answer. The engine
(fleet/ota/rollouts.py) acts on what these write at its next tick (the routes nudge it).
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tortoise.functions import Count
from tortoise.transactions import in_transaction

from fleet.models import Device, DeviceStatus
from fleet.ota.gate import check_phases, phase_of, phase_sizes, rank_key
from fleet.ota.models import Release
from fleet.ota.rollout_models import Rollout, RolloutDevice
from fleet.ota.states import DeviceState, RolloutStatus
from fleet.ota.windows import WindowError, applicable, check_timezone, parse_windows

MAX_DEVICES = 100_000  # devices one rollout may target
TARGET_LIST_MAX = 5000  # entries of each list in a target
INSERT_BATCH = 1000


class RolloutRefused(Exception):
    """What a person asked cannot be done: `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg


@dataclass
class Target:
    """Which devices: all of the release's kind that match every list given (a device matches a
    list when it has any of its entries). Decommissioned devices are never targeted."""

    kind: str | None = None
    roles: list[str] = field(default_factory=list)
    wards: list[str] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "roles": self.roles, "wards": self.wards, "sites": self.sites,
                "tags": self.tags, "devices": self.devices}


@dataclass
class Plan:
    """A rollout as asked (the API's RolloutCreate, without FastAPI)."""

    release: str
    target: Target
    phases: list[float]
    soak_s: float
    max_failure_pct: float
    online_within_s: int
    offer_timeout_s: int
    max_boots: int
    tolerance_pct: float
    offers_per_min: int
    windows: dict[str, str]
    timezone: str


async def choose(target: Target, kind: str) -> list[tuple[str, str | None, list[str]]]:
    """(id, kind, roles) of the targeted devices: the database filters kind, wards, sites and ids;
    roles and tags (JSON lists) are matched here."""
    query = Device.filter(kind=kind).exclude(status=DeviceStatus.DECOMMISSIONED)
    if target.wards:
        query = query.filter(ward__in=target.wards)
    if target.sites:
        query = query.filter(site__in=target.sites)
    if target.devices:
        query = query.filter(id__in=target.devices)
    roles, tags = set(target.roles), set(target.tags)
    chosen = []
    for device_id, device_kind, device_roles, device_tags in await query.values_list("id", "kind", "roles", "tags"):
        device_roles = [r for r in (device_roles or []) if isinstance(r, str)]
        if roles and not roles.intersection(device_roles):
            continue
        if tags and not tags.intersection(t for t in (device_tags or []) if isinstance(t, str)):
            continue
        chosen.append((str(device_id), device_kind, device_roles))
    return chosen


async def create_rollout(plan: Plan, actor: str, now: datetime | None = None) -> Rollout:
    now = now or datetime.now(UTC)
    release = await Release.get_or_none(name=plan.release)
    if release is None:
        raise RolloutRefused(404, f"no release named {plan.release[:64]!r}")
    problem = check_phases(plan.phases)
    if problem:
        raise RolloutRefused(422, problem)
    try:
        check_timezone(plan.timezone)
        windows = parse_windows(plan.windows)
    except WindowError as err:
        raise RolloutRefused(422, str(err)) from err
    kind = plan.target.kind or release.kind
    if kind != release.kind:
        raise RolloutRefused(422, f"target kind {kind!r} is not the release's kind {release.kind!r}")
    chosen = await choose(plan.target, kind)
    if not chosen:
        raise RolloutRefused(422, f"the target matches no device: no {kind} device that is not decommissioned "
                                  "has every part of the target (kind, roles, wards, sites, tags, devices)")
    if len(chosen) > MAX_DEVICES:
        raise RolloutRefused(422, f"the target matches {len(chosen)} devices; a rollout takes at most {MAX_DEVICES}")
    chosen.sort(key=lambda d: rank_key(release.name, d[0]))
    sizes = phase_sizes(len(chosen), plan.phases)
    async with in_transaction() as conn:
        rollout = await Rollout.create(
            using_db=conn, release=release, release_name=release.name,
            target={**plan.target.as_dict(), "kind": kind}, total=len(chosen), phases=plan.phases, sizes=sizes,
            phase=0, phase_started_at=now, status=RolloutStatus.RUNNING, soak_s=plan.soak_s,
            max_failure_pct=plan.max_failure_pct, online_within_s=plan.online_within_s,
            offer_timeout_s=plan.offer_timeout_s, max_boots=plan.max_boots, tolerance_pct=plan.tolerance_pct,
            offers_per_min=plan.offers_per_min, windows=plan.windows, timezone=plan.timezone, created_by=actor)
        rows = [RolloutDevice(rollout_id=rollout.id, device_id=device_id, rank=rank, phase=phase_of(rank, sizes),
                              window=applicable(windows, device_kind, device_roles))
                for rank, (device_id, device_kind, device_roles) in enumerate(chosen)]
        for start in range(0, len(rows), INSERT_BATCH):
            await RolloutDevice.bulk_create(rows[start:start + INSERT_BATCH], using_db=conn)
    return rollout


# -- people's commands ------------------------------------------------------------------------------

def _refuse_unless(rollout: Rollout, allowed: Sequence[RolloutStatus], doing: str) -> None:
    if rollout.status not in allowed:
        raise RolloutRefused(409, f"rollout {rollout.id} is {rollout.status.value}: it cannot be {doing}")


async def _set(rollout: Rollout, expected: RolloutStatus, **changes: Any) -> None:
    """A conditional update on the status read: the engine may have paused it meanwhile."""
    if not await Rollout.filter(id=rollout.id, status=expected).update(**changes):
        raise RolloutRefused(409, f"rollout {rollout.id} changed meanwhile; look again and retry")
    await rollout.refresh_from_db()


async def pause(rollout: Rollout, actor: str, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    _refuse_unless(rollout, [RolloutStatus.RUNNING], "paused")
    await _set(rollout, RolloutStatus.RUNNING, status=RolloutStatus.PAUSED, updated_at=now,
               pause_reason={"figure": "command", "by": actor, "at": now.isoformat()})


async def resume(rollout: Rollout, now: datetime | None = None) -> None:
    """Running again. Whatever breached has been looked at: the failure rate and the gate count only
    what happens from now on (`judged_from`), and the phase soaks again once settled."""
    now = now or datetime.now(UTC)
    _refuse_unless(rollout, [RolloutStatus.PAUSED], "resumed")
    await _set(rollout, RolloutStatus.PAUSED, status=RolloutStatus.RUNNING, pause_reason=None, judged_from=now,
               soak_started_at=None, updated_at=now)


async def abort(rollout: Rollout, now: datetime | None = None) -> None:
    """Stopped for good: no more offers; the engine clears the install offers still standing."""
    now = now or datetime.now(UTC)
    _refuse_unless(rollout, [RolloutStatus.RUNNING, RolloutStatus.PAUSED], "aborted")
    await _set(rollout, rollout.status, status=RolloutStatus.ABORTED, finished_at=now, updated_at=now)


async def rollback(rollout: Rollout, phase: int | None, actor: str, now: datetime | None = None) -> int:
    """Send a `rollback` offer to every device of `phase` (default: the current one) that confirmed
    the release; a running rollout is paused first. Returns how many devices will get one."""
    now = now or datetime.now(UTC)
    phase = rollout.phase if phase is None else phase
    if not 0 <= phase <= rollout.phase:
        raise RolloutRefused(422, f"phase {phase} has not started: phases 0 to {rollout.phase} have")
    updated = RolloutDevice.filter(rollout_id=rollout.id, phase=phase, action="install",
                                   state=DeviceState.CONFIRMED)
    if not await updated.exists():
        raise RolloutRefused(409, f"no device of phase {phase} runs the release (confirmed): nothing to roll back")
    if rollout.status is RolloutStatus.RUNNING:
        await _set(rollout, RolloutStatus.RUNNING, status=RolloutStatus.PAUSED, updated_at=now,
                   pause_reason={"figure": "command", "by": actor, "at": now.isoformat(), "rollback": phase})
    return await updated.update(action="rollback", state=DeviceState.PENDING, reason=None)


async def counts_of(rollout_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Devices per state of each rollout, in one grouped query."""
    counts: dict[int, Counter[str]] = {i: Counter() for i in rollout_ids}
    if rollout_ids:
        rows = await (RolloutDevice.filter(rollout_id__in=list(rollout_ids)).annotate(n=Count("id"))
                      .group_by("rollout_id", "state").values_list("rollout_id", "state", "n"))
        for rollout_id, state, n in rows:
            counts[int(rollout_id)][str(state)] = int(n)
    return {i: {s.value: c.get(s.value, 0) for s in DeviceState} for i, c in counts.items()}
