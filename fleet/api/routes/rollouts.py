"""OTA rollouts: start one, list and read them with their devices' states, pause, resume, abort,
roll back a phase (docs/fleet.md "Rollouts"). The engine (fleet/ota/rollouts.py) does the work."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from contract import DEVICE_ID_PATTERN
from fleet.api.deps import LOGGED_IN, Auditor, Reader, RowId, RuntimeDep, acting
from fleet.api.errors import ValidationErrorPublic, answer
from fleet.api.schemas import TAG_PATTERN, Kind
from fleet.auth.roles import Permission
from fleet.ota import rollout_commands as commands
from fleet.ota.gate import DEFAULT_PHASES, MAX_PHASES
from fleet.ota.rollout_commands import TARGET_LIST_MAX, Plan, RolloutRefused, Target
from fleet.ota.rollout_models import Rollout, RolloutDevice
from fleet.ota.states import DeviceState, RolloutStatus
from fleet.ota.windows import DEFAULT_TIMEZONE, MAX_WINDOW_TEXT, MAX_WINDOWS

router = APIRouter(prefix="/api/rollouts", tags=["rollouts"], dependencies=[LOGGED_IN])
TOTAL_HEADER = "X-Total-Count"
ROLE = r"^[a-z][a-z0-9_]{0,31}$"


class TargetSpec(BaseModel):
    """Which devices: those of the release's kind matching every list given (any entry of a list)."""

    model_config = ConfigDict(extra="forbid")
    kind: Kind | None = Field(default=None, description="default: the release's kind; another kind is refused")
    roles: list[Annotated[str, Field(pattern=ROLE)]] = Field(default_factory=list, max_length=16)
    wards: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(default_factory=list, max_length=64)
    sites: list[Annotated[str, Field(min_length=1, max_length=120)]] = Field(default_factory=list,
                                                                             max_length=TARGET_LIST_MAX)
    tags: list[Annotated[str, Field(pattern=TAG_PATTERN)]] = Field(default_factory=list, max_length=32)
    devices: list[Annotated[str, Field(pattern=f"^{DEVICE_ID_PATTERN}$")]] = Field(
        default_factory=list, max_length=TARGET_LIST_MAX)


class RolloutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    release: str = Field(min_length=1, max_length=64, description="the release's name, e.g. esp32-0.2.0")
    target: TargetSpec = Field(default_factory=TargetSpec)
    phases: list[float] = Field(default_factory=lambda: [float(p) for p in DEFAULT_PHASES], min_length=1,
                                max_length=MAX_PHASES, description="cumulative percentages of the target, the last 100")
    soak_s: float = Field(default=1800, ge=0, le=30 * 86400,
                          description="seconds a settled phase runs before its gate")
    max_failure_pct: float = Field(default=5.0, ge=0, le=100)
    online_within_s: int = Field(default=600, ge=1, le=86400,
                                 description="a device rebooting longer than this fails (`offline`)")
    offer_timeout_s: int = Field(default=3600, ge=1, le=7 * 86400,
                                 description="a device offered or in flight with no report this long fails (`timeout`)")
    max_boots: int = Field(default=2, ge=0, le=1000, description="boots an update may add before it is a crash loop")
    tolerance_pct: float = Field(default=25.0, ge=0, le=1000)
    offers_per_min: int = Field(default=1000, ge=1, le=1_000_000)
    windows: dict[Annotated[str, Field(max_length=32)], Annotated[str, Field(max_length=MAX_WINDOW_TEXT)]] = Field(
        default_factory=dict, max_length=MAX_WINDOWS,
        description="device class (role, kind or '*') to a window: 'always', '08:00-17:00[,…]' or "
                    "'not 07:00-09:00,16:30-19:00'")
    timezone: str = Field(default=DEFAULT_TIMEZONE, max_length=64, description="the windows' time zone (IANA)")


class RolloutPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)
    id: int
    release: str = Field(validation_alias="release_name")
    target: dict[str, Any]
    total: int
    phases: list[float]
    sizes: list[int] = Field(description="cumulative device counts of the phases")
    phase: int = Field(description="the current phase's index")
    status: RolloutStatus
    pause_reason: dict[str, Any] | None
    soak_s: float
    max_failure_pct: float
    online_within_s: int
    offer_timeout_s: int
    max_boots: int
    tolerance_pct: float
    offers_per_min: int
    windows: dict[str, str]
    timezone: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    phase_started_at: datetime | None
    soak_started_at: datetime | None
    judged_from: datetime | None
    finished_at: datetime | None
    counts: dict[str, int] = Field(default_factory=dict, description="devices per state")


class RolloutDevicePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    device_id: str
    rank: int
    phase: int
    window: str = Field(description="the window keys that apply to it (comma-separated; empty: none)")
    state: DeviceState
    reason: str | None
    pct: int | None
    action: str
    offer_id: str | None
    offered_at: datetime | None
    reported_at: datetime | None
    done_at: datetime | None
    boots_before: int | None
    before: dict[str, float] | None
    after: dict[str, float] | None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phase: int | None = Field(default=None, ge=0, le=MAX_PHASES, description="default: the current phase")


class RollbackPublic(RolloutPublic):
    rollback_offers: int = Field(description="devices that get a rollback offer")


def _refused(err: RolloutRefused) -> HTTPException:
    return HTTPException(err.status, err.msg)


async def _public(rollout: Rollout) -> RolloutPublic:
    counts = await commands.counts_of([rollout.id])
    return RolloutPublic.model_validate(rollout).model_copy(update={"counts": counts[rollout.id]})


async def _rollout(rollout_id: int) -> Rollout:
    rollout = await Rollout.get_or_none(id=rollout_id)
    if rollout is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rollout {rollout_id}")
    return rollout


def _nudge(runtime: RuntimeDep) -> None:
    if runtime.rollouts is not None:
        runtime.rollouts.nudge()


@router.post("", status_code=status.HTTP_201_CREATED, responses={
    404: answer("no release of that name"),
    422: {"model": ValidationErrorPublic,
          "description": "bad phases, window or time zone, a target of another kind, one that matches no device or "
                         "more than 100,000 (the detail says which); or a bad request shape"}})
async def create_rollout(body: RolloutCreate, runtime: RuntimeDep,
                         audit: Annotated[Auditor, acting(Permission.ROLLOUTS)]) -> RolloutPublic:
    """Start a rollout: the targeted devices are chosen now, in a stable order, and offered phase by phase."""
    plan = Plan(release=body.release, target=Target(**body.target.model_dump()), phases=body.phases,
                soak_s=body.soak_s, max_failure_pct=body.max_failure_pct, online_within_s=body.online_within_s,
                offer_timeout_s=body.offer_timeout_s, max_boots=body.max_boots, tolerance_pct=body.tolerance_pct,
                offers_per_min=body.offers_per_min, windows=body.windows, timezone=body.timezone)
    try:
        rollout = await commands.create_rollout(plan, audit.actor)
    except RolloutRefused as err:
        raise _refused(err) from err
    await audit("rollout.create", str(rollout.id), {"release": rollout.release_name, "target": rollout.target,
                                                    "total": rollout.total, "phases": rollout.phases})
    _nudge(runtime)
    return await _public(rollout)


@router.get("", responses={200: {"headers": {TOTAL_HEADER: {"description": "rollouts that match, over all pages",
                                                             "schema": {"type": "integer"}}}}})
async def list_rollouts(_: Reader, response: Response,
                        status_: Annotated[RolloutStatus | None, Query(alias="status")] = None,
                        release: Annotated[str | None, Query(max_length=64)] = None,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50,
                        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[RolloutPublic]:
    """Newest first, with each rollout's devices per state."""
    query = Rollout.all()
    if status_ is not None:
        query = query.filter(status=status_)
    if release:
        query = query.filter(release_name=release)
    rows = await query.order_by("-id").offset(offset).limit(limit)
    response.headers[TOTAL_HEADER] = str(offset + len(rows) if 0 < len(rows) < limit else await query.count())
    counts = await commands.counts_of([r.id for r in rows])
    return [RolloutPublic.model_validate(r).model_copy(update={"counts": counts[r.id]}) for r in rows]


@router.get("/{rollout_id}")
async def get_rollout(rollout_id: RowId, _: Reader) -> RolloutPublic:
    return await _public(await _rollout(rollout_id))


@router.get("/{rollout_id}/devices", responses={200: {"headers": {TOTAL_HEADER: {
    "description": "devices that match, over all pages", "schema": {"type": "integer"}}}}})
async def rollout_devices(rollout_id: RowId, _: Reader, response: Response,
                          state: DeviceState | None = None,
                          phase: Annotated[int | None, Query(ge=0, le=MAX_PHASES)] = None,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                          offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> list[RolloutDevicePublic]:
    """The rollout's devices in rank order (the order phases take them), with their states."""
    rollout = await _rollout(rollout_id)
    query = RolloutDevice.filter(rollout_id=rollout.id)
    if state is not None:
        query = query.filter(state=state)
    if phase is not None:
        query = query.filter(phase=phase)
    rows = await query.order_by("rank").offset(offset).limit(limit)
    response.headers[TOTAL_HEADER] = str(offset + len(rows) if 0 < len(rows) < limit else await query.count())
    return [RolloutDevicePublic.model_validate(r) for r in rows]


Action = Literal["pause", "resume", "abort"]
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: answer("the rollout's status does not allow it (e.g. resuming one that runs)")}


async def _act(rollout_id: int, action: Action, runtime: RuntimeDep, audit: Auditor) -> RolloutPublic:
    rollout = await _rollout(rollout_id)
    try:
        if action == "pause":
            await commands.pause(rollout, audit.actor)
        elif action == "resume":
            await commands.resume(rollout)
        else:
            await commands.abort(rollout)
    except RolloutRefused as err:
        raise _refused(err) from err
    await audit(f"rollout.{action}", str(rollout.id), {"release": rollout.release_name, "phase": rollout.phase})
    _nudge(runtime)
    return await _public(rollout)


@router.post("/{rollout_id}/pause", responses=_CONFLICT)
async def pause_rollout(rollout_id: RowId, runtime: RuntimeDep,
                        audit: Annotated[Auditor, acting(Permission.ROLLOUTS)]) -> RolloutPublic:
    """No more offers; devices already offered go on."""
    return await _act(rollout_id, "pause", runtime, audit)


@router.post("/{rollout_id}/resume", responses=_CONFLICT)
async def resume_rollout(rollout_id: RowId, runtime: RuntimeDep,
                         audit: Annotated[Auditor, acting(Permission.ROLLOUTS)]) -> RolloutPublic:
    """Offers go on; what paused it is taken as looked at: failures and the gate count from now on."""
    return await _act(rollout_id, "resume", runtime, audit)


@router.post("/{rollout_id}/abort", responses=_CONFLICT)
async def abort_rollout(rollout_id: RowId, runtime: RuntimeDep,
                        audit: Annotated[Auditor, acting(Permission.ROLLOUTS)]) -> RolloutPublic:
    """Stop for good: the standing install offers are cleared."""
    return await _act(rollout_id, "abort", runtime, audit)


@router.post("/{rollout_id}/rollback", responses={
    409: answer("no device of the phase runs the release"),
    422: {"model": ValidationErrorPublic, "description": "the phase has not started; or a bad request shape"}})
async def rollback_rollout(rollout_id: RowId, runtime: RuntimeDep,
                           audit: Annotated[Auditor, acting(Permission.ROLLOUTS)],
                           body: RollbackRequest | None = None) -> RollbackPublic:
    """Send a `rollback` offer to the phase's devices that confirmed the release (pausing a running rollout)."""
    rollout = await _rollout(rollout_id)
    phase = body.phase if body is not None else None
    try:
        count = await commands.rollback(rollout, phase, audit.actor)
    except RolloutRefused as err:
        raise _refused(err) from err
    await audit("rollout.rollback", str(rollout.id), {"release": rollout.release_name,
                                                      "phase": rollout.phase if phase is None else phase,
                                                      "devices": count})
    _nudge(runtime)
    public = await _public(rollout)
    return RollbackPublic(**public.model_dump(), rollback_offers=count)
