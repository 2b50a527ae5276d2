"""One camera's processing, frame in -> event messages out: gate, events, snapshot, detector.

No MQTT and no asyncio here: the role runs `process` in a worker thread and sends what it
returns; the benchmark runs it directly on synthetic scenes.
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.roles.camera.settings import CameraSettings
from edge.roles.camera.snapshots import SnapshotStore
from edge.roles.camera.source import Frame
from edge.vision.detector import Detection, Detector
from edge.vision.episodes import Emission, Episode, EpisodeTracker
from edge.vision.gate import Box, Image, MotionGate
from edge.vision.jpeg import EncodeError, encode_jpeg

log = logging.getLogger(__name__)

MAX_LABELS = 8


@dataclass(frozen=True, slots=True)
class MotionMessage:
    """The arguments of `RoleContext.event` for one motion event message."""

    event_id: str
    phase: str
    category: str
    data: dict[str, Any]
    snapshot: dict[str, Any] | None = None
    event_type: str = field(default="motion")


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


class CameraPipeline:
    def __init__(
        self,
        camera: CameraSettings,
        *,
        store: SnapshotStore | None,
        detector: Detector | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.camera = camera
        self.gate = MotionGate(camera.gate.config(), ignore=camera.ignore, zones=[z.polygon for z in camera.zones])
        self._detector = detector
        self.tracker = EpisodeTracker(
            camera.episodes(), zones=len(camera.zones), confirm=self._confirm if detector else None
        )
        self._zones: list[tuple[str | None, str]] = [
            (None, camera.category),
            *((z.name, z.category) for z in camera.zones),
        ]
        self._store = store
        # Event ids stay unique across restarts: the pipeline's start time is part of them.
        self._id_prefix = f"mot-{camera.id}-{_base36(int(wall_clock() * 1000))}"
        self._snapshots: dict[int, dict[str, Any]] = {}
        self._scale = (1.0, 1.0)
        self._frame_size = [0, 0]
        self._recalibrate = False
        self.frames = 0
        self.motion_frames = 0
        self.gate_s = 0.0
        self.messages = 0
        self.snapshots = 0
        self.snapshot_bytes = 0
        self.snapshot_errors = 0
        self.detector_errors = 0

    def recalibrate(self) -> None:
        """Reset the background before the next frame (safe to call from another thread)."""
        self._recalibrate = True

    def process(self, frame: Frame) -> list[MotionMessage]:
        image = frame.image
        if self._recalibrate:
            self._recalibrate = False
            self.gate.recalibrate()
        height, width = image.shape[:2]
        if width != self._frame_size[0] or height != self._frame_size[1]:
            self._frame_size = [width, height]
            self._scale = (width / self.gate.config.width, height / self.gate.config.height)
        started = time.perf_counter()
        result = self.gate.process(image)
        self.gate_s += time.perf_counter() - started
        self.frames += 1
        if result.boxes:
            self.motion_frames += 1
        return [self._message(e) for e in self.tracker.update(frame.t, result, image)]

    def close(self, t: float) -> list[MotionMessage]:
        return [self._message(e) for e in self.tracker.close(t)]

    # -- messages ---------------------------------------------------------------------------

    def _box(self, x: int, y: int, w: int, h: int) -> list[int]:
        sx, sy = self._scale
        return [round(x * sx), round(y * sy), round(w * sx), round(h * sy)]

    def _area_pct(self, area: int) -> float:
        return round(100.0 * area / (self.gate.config.width * self.gate.config.height), 2)

    def _message(self, emission: Emission) -> MotionMessage:
        episode = emission.episode
        zone, category = self._zones[episode.zone] if episode.zone < len(self._zones) else self._zones[0]
        event_id = f"{self._id_prefix}-{episode.number}"
        data: dict[str, Any] = {
            "camera": self.camera.id,
            "boxes": [self._box(b.x, b.y, b.w, b.h) for b in episode.boxes],
            "area_pct": self._area_pct(sum(b.area for b in episode.boxes)),
            "frame": list(self._frame_size),
        }
        if zone is not None:
            data["zone"] = zone
        if emission.phase == "start" and episode.labels:
            data["labels"] = [_label(d) for d in episode.labels[:MAX_LABELS]]
        if emission.phase != "start":
            data["duration_ms"] = round((emission.at - episode.started_at) * 1000)
            data["frames"] = episode.frames
        if emission.phase == "end":
            x0, y0, x1, y1 = episode.union
            data["bbox"] = self._box(x0, y0, x1 - x0, y1 - y0)
            data["peak_area_pct"] = self._area_pct(episode.peak_area)
        if emission.snapshot:
            self._take_snapshot(event_id, episode)
        snapshot = self._snapshots.get(episode.number)
        if emission.phase == "end":
            self._snapshots.pop(episode.number, None)
        self.messages += 1
        return MotionMessage(event_id, emission.phase, category, data, snapshot)

    def _take_snapshot(self, event_id: str, episode: Episode) -> None:
        frame, episode.best_frame = episode.best_frame, None
        if frame is None or self._store is None:
            return
        try:
            jpeg = encode_jpeg(frame, max_width=self.camera.snapshot_width, quality=self.camera.snapshot_quality)
            self._snapshots[episode.number] = self._store.put(f"{event_id}.jpg", jpeg)
        except (OSError, EncodeError) as err:
            self.snapshot_errors += 1
            log.error("%s: snapshot of %s not stored: %s", self.camera.id, event_id, err)
            return
        self.snapshots += 1
        self.snapshot_bytes += len(jpeg)

    def _confirm(self, image: Image, boxes: Sequence[Box]) -> Sequence[Detection] | None:
        assert self._detector is not None
        sx, sy = self._scale
        scaled = [Box(round(b.x * sx), round(b.y * sy), round(b.w * sx), round(b.h * sy), b.area, b.zone)
                  for b in boxes]
        try:
            return self._detector(image, scaled)
        except Exception:  # a plug-in's bug must not stop the gate: the event goes on unlabelled
            self.detector_errors += 1
            log.exception("%s: the detector failed", self.camera.id)
            return [Detection("unknown", 0.0)]


def _label(detection: Any) -> dict[str, Any]:
    if isinstance(detection, Detection):
        out: dict[str, Any] = {"label": detection.label[:64], "score": round(float(detection.score), 3)}
        if detection.box is not None:
            out["box"] = list(detection.box)
        return out
    return {"label": str(detection)[:64]}
