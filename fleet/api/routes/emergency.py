"""The emergency button: `POST /api/broadcasts/emergency` (docs/broadcasts.md, "Emergency").

The rules are fleet/broadcast/emergency.py's (`start_emergency`, which the emergency page calls too).
"""

from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from fleet.api.deps import LOGGED_IN, Auditor, RuntimeDep, acting
from fleet.api.errors import ValidationErrorPublic, answer
from fleet.api.routes.broadcasts import BroadcastPublic, ReviewPublic, TargetsIn, _public, _review
from fleet.auth.roles import Permission
from fleet.broadcast.calendar import Targets
from fleet.broadcast.emergency import (
    ACKED,
    FALLBACK,
    IN_FORCE_DEFAULT_MIN,
    IN_FORCE_MAX_MIN,
    SENT,
    WAITING_CLIP,
    EmergencyError,
    start_emergency,
)

router = APIRouter(prefix="/api/broadcasts", tags=["broadcasts"], dependencies=[LOGGED_IN])


class EmergencyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    clip_id: int = Field(ge=1, le=2**31 - 1)
    targets: TargetsIn
    in_force_min: int = Field(default=IN_FORCE_DEFAULT_MIN, ge=1, le=IN_FORCE_MAX_MIN,
                              description="a speaker that comes back within this many minutes still plays it "
                                          "(from its desired state)")
    confirm: bool = Field(default=False, description="must be true: it plays at once on every targeted speaker")


class DispatchPublic(BaseModel):
    sent: list[str] = Field(description="online speakers holding the clip: sent speaker.broadcast now")
    waiting_clip: list[str] = Field(description="online speakers without the clip: fetching it, then the command")
    fallback: list[str] = Field(description="offline speakers (or no variant for their kind): the entry goes in "
                                            "their desired state")
    acked: list[str] = Field(default_factory=list)


class EmergencyStarted(BaseModel):
    broadcast: BroadcastPublic
    entry_id: str = Field(description="b<broadcast id>.<start, Unix s>: the nodes' playback event id")
    dispatch: DispatchPublic
    review: ReviewPublic = Field(description="the conflicts are listed; they do not block: an emergency wins by level")


@router.post("/emergency", status_code=status.HTTP_201_CREATED, responses={
    422: {"model": ValidationErrorPublic, "description": "no confirm, no speaker targeted, no such clip (one "
                                                         "sentence); or a bad request shape (a list)"},
    503: answer("the broadcasts worker is not running")})
async def emergency(body: EmergencyCreate, runtime: RuntimeDep,
                    audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> EmergencyStarted:
    """Start an emergency broadcast now: every targeted online speaker plays it at once."""
    if runtime.broadcasts is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the broadcasts worker is not running")
    targets = Targets(tuple(body.targets.wards), tuple(body.targets.tags), tuple(body.targets.devices))
    try:
        started = await start_emergency(runtime, actor=audit.actor, title=body.title.strip() or body.title,
                                        clip_id=body.clip_id, targets=targets, confirm=body.confirm,
                                        in_force_min=body.in_force_min)
    except EmergencyError as err:
        raise HTTPException(err.status, str(err)) from err
    states = {k: sorted(v) for k, v in started.states.items()}
    await audit("broadcast.emergency", str(started.broadcast.id),
                {"title": started.broadcast.title, "in_force_min": body.in_force_min,
                 **{k: len(v) for k, v in states.items()}})
    return EmergencyStarted(
        broadcast=_public(started.broadcast, datetime.now(UTC)), entry_id=started.entry_id,
        dispatch=DispatchPublic(sent=states.get(SENT, []), waiting_clip=states.get(WAITING_CLIP, []),
                                fallback=states.get(FALLBACK, []), acked=states.get(ACKED, [])),
        review=_review(started.review, ZoneInfo(runtime.settings.timezone)))
