"""The camera role's settings: `[roles.camera]` with one `[[roles.camera.cameras]]` per camera.

Regions (zones, ignored areas) are polygons in fractions of the frame (0..1), so they survive a
change of stream resolution.
"""

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from edge.roles.base import RoleSettings
from edge.vision.episodes import EpisodeConfig
from edge.vision.gate import GateConfig

Category = Literal["security", "traffic_safety", "other"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Polygon = Annotated[list[tuple[Fraction, Fraction]], Field(min_length=3, max_length=64)]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]


class ZoneSettings(RoleSettings):
    """A region whose events carry their own purpose category (e.g. the crossing: traffic_safety)."""

    name: Name
    polygon: Polygon
    category: Category


_GATE = GateConfig()  # the gate's own defaults are the only ones: the settings add bounds


class GateSettings(RoleSettings):
    """`[roles.camera.cameras.gate]`: the fields of `edge.vision.gate.GateConfig`, bounded."""

    width: int = Field(default=_GATE.width, ge=32, le=640)
    height: int = Field(default=_GATE.height, ge=18, le=480)
    alpha: float = Field(default=_GATE.alpha, gt=0.0, le=0.5)
    threshold: int = Field(default=_GATE.threshold, ge=1, le=254)
    threshold_min: int = Field(default=_GATE.threshold_min, ge=1, le=254)
    noise_k: float = Field(default=_GATE.noise_k, gt=0.0, le=20.0)
    shift: int = Field(default=_GATE.shift, ge=0, le=4)
    still_frames: int = Field(default=_GATE.still_frames, ge=0, le=250)
    min_area: int = Field(default=_GATE.min_area, ge=1)
    dilate: int = Field(default=_GATE.dilate, ge=0, le=4)
    global_change: float = Field(default=_GATE.global_change, gt=0.0, le=1.0)
    luma_jump: float = Field(default=_GATE.luma_jump, gt=0.0, le=1.0)
    settle_frames: int = Field(default=_GATE.settle_frames, ge=0, le=250)

    @model_validator(mode="after")
    def _floor_below_ceiling(self) -> "GateSettings":
        if self.threshold_min > self.threshold:
            raise ValueError("threshold_min must not exceed threshold")
        return self

    def config(self) -> GateConfig:
        return GateConfig(**self.model_dump())


class CameraSettings(RoleSettings):
    id: Name
    url: str = Field(min_length=1, max_length=500)  # rtsp://..., http://..., or a file path
    category: Category = "other"  # for motion outside every zone
    zones: list[ZoneSettings] = Field(default_factory=list, max_length=16)
    ignore: list[Polygon] = Field(default_factory=list, max_length=32)  # trees, on-screen clock
    realtime: bool = True  # a file is played at its frame rate (False: as fast as the gate goes)
    loop: bool = False  # a file starts again at its end
    frame_queue: int = Field(default=4, ge=1, le=256)  # decoded frames waiting for the gate
    reconnect_min_s: float = Field(default=0.5, gt=0.0, le=60.0)
    reconnect_max_s: float = Field(default=30.0, gt=0.0, le=600.0)
    open_timeout_s: float = Field(default=10.0, gt=0.0, le=120.0)
    gate: GateSettings = Field(default_factory=GateSettings)
    start_frames: int = Field(default=3, ge=1, le=250)
    end_after_s: float = Field(default=2.0, gt=0.0, le=600.0)
    update_every_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    snapshot_after_s: float = Field(default=1.0, ge=0.0, le=600.0)
    max_duration_s: float = Field(default=600.0, gt=0.0, le=86_400.0)
    rate_per_min: float = Field(default=6.0, gt=0.0, le=600.0)
    burst: int = Field(default=3, ge=1, le=100)
    snapshot_width: int = Field(default=640, ge=64, le=3840)
    snapshot_quality: int = Field(default=80, ge=10, le=100)
    detector: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    detector_options: dict[str, Any] = Field(default_factory=dict)

    def episodes(self) -> EpisodeConfig:
        return EpisodeConfig(
            start_frames=self.start_frames,
            end_after_s=self.end_after_s,
            update_every_s=self.update_every_s,
            snapshot_after_s=self.snapshot_after_s,
            max_duration_s=self.max_duration_s,
            rate_per_min=self.rate_per_min,
            burst=self.burst,
        )


class CameraRoleSettings(RoleSettings):
    cameras: list[CameraSettings] = Field(min_length=1, max_length=16)
    snapshot_dir: Path | None = None  # default: <state_dir>/snapshots
    snapshot_max_mb: float = Field(default=256.0, gt=0.0, le=100_000.0)
    snapshot_max_files: int = Field(default=10_000, ge=1, le=1_000_000)

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: list[CameraSettings]) -> list[CameraSettings]:
        ids = [c.id for c in cameras]
        if len(set(ids)) != len(ids):
            raise ValueError("camera ids must be unique")
        return cameras
