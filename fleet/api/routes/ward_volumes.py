"""The wards' speaker volume by time of day (/api/ward-volumes; docs/broadcasts.md, "Delivery").

A change marks the ward's speakers due for a new document (their entries carry the volume) and
nudges the delivery.
"""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from fleet.api.deps import LOGGED_IN, Auditor, Reader, RuntimeDep, acting
from fleet.api.errors import ValidationErrorPublic, answer
from fleet.api.routes.broadcasts import deliver, nudge_of
from fleet.auth.roles import Permission
from fleet.broadcast.models import WardVolume
from fleet.broadcast.volumes import STEPS_MAX, VolumeError, check_steps

router = APIRouter(prefix="/api/ward-volumes", tags=["broadcasts"], dependencies=[LOGGED_IN])
WardPath = Annotated[str, Path(min_length=1, max_length=80)]


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
                       description="HH:MM local: the volume holds from this time to the next step's")
    volume: int = Field(ge=0, le=100)


class WardVolumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: list[Step] = Field(min_length=1, max_length=STEPS_MAX,
                              description="before the day's first step, the last one holds (it wraps)")


class WardVolumePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    ward: str
    steps: list[dict[str, Any]]
    updated_by: str


@router.get("")
async def list_ward_volumes(_: Reader) -> list[WardVolumePublic]:
    return [WardVolumePublic.model_validate(r) for r in await WardVolume.all().order_by("ward")]


@router.put("/{ward}", responses={422: {"model": ValidationErrorPublic,
                                        "description": "a time given twice, or a bad shape"}})
async def set_ward_volume(ward: WardPath, body: WardVolumeIn, runtime: RuntimeDep,
                          audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> WardVolumePublic:
    """A ward's volume profile: each entry of its speakers plays at the volume of its local time."""
    try:
        steps = check_steps([{"from": s.from_, "volume": s.volume} for s in body.steps])
    except VolumeError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    row, _ = await WardVolume.update_or_create(defaults={"steps": steps, "updated_by": audit.actor}, ward=ward)
    await audit("ward_volume.set", ward, {"steps": steps})
    await deliver(nudge_of(runtime), "volume", ward=ward)
    return WardVolumePublic.model_validate(row)


@router.delete("/{ward}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: answer("the ward has no volume profile")})
async def delete_ward_volume(ward: WardPath, runtime: RuntimeDep,
                             audit: Annotated[Auditor, acting(Permission.BROADCAST)]) -> Response:
    """Back to the speakers' default volume (70)."""
    if not await WardVolume.filter(ward=ward).delete():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"ward {ward!r} has no volume profile")
    await audit("ward_volume.delete", ward)
    await deliver(nudge_of(runtime), "volume", ward=ward)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
