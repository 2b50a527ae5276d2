"""The motion gate: which parts of a frame changed, at the least cost per frame.

Per frame: shrink to a small luma image (default 160x90), compare it with a running-average
background corrected for the frame's overall brightness, threshold, drop the ignored regions,
and turn what is left into boxes. Everything after the first resize works on ~14,000 pixels,
so the resize dominates; it is done in two steps (a cheap bilinear step to twice the work size,
then an area average) because a single area resize of a 1280x720 frame costs more than the
whole rest of the gate.

A sudden change of the whole scene (headlights, a cloud, the camera's IR switch, a scene cut)
is not motion: when most of the image changes at once, or the mean brightness jumps, the
background is reset to the new scene and the gate reports nothing for `settle_frames` frames.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[Any]  # uint8: BGR (h, w, 3) or grey (h, w)
Polygon = Sequence[tuple[float, float]]  # points in fractions of the frame's width and height


@dataclass(frozen=True, slots=True)
class GateConfig:
    width: int = 160  # work image size; boxes are found at this resolution
    height: int = 90
    alpha: float = 0.05  # background learning rate per frame (time constant ~1/alpha frames)
    threshold: int = 18  # luma difference (0..255) that counts as a change
    min_area: int = 6  # smallest blob, in work-image pixels, that counts as motion
    dilate: int = 1  # dilation passes joining the fragments of one object
    global_change: float = 0.35  # changed share of the image that means "the whole scene changed"
    luma_jump: float = 0.2  # relative jump of mean brightness in one frame that means the same
    settle_frames: int = 8  # frames without motion after a recalibration (auto-exposure settling)
    max_boxes: int = 16


@dataclass(frozen=True, slots=True)
class Box:
    """A moving blob in work-image pixels, and the zone its centre lies in (0: none)."""

    x: int
    y: int
    w: int
    h: int
    area: int
    zone: int = 0


@dataclass(frozen=True, slots=True)
class GateResult:
    boxes: list[Box] = field(default_factory=list)
    changed: float = 0.0  # share of the watched pixels that changed
    recalibrated: bool = False  # this frame reset the background
    settling: bool = False  # no judgement in this frame (first frames, after a recalibration)


def rasterize(polygons: Sequence[Polygon], width: int, height: int, value: int = 255) -> Image:
    """A uint8 image with `value` inside the polygons (fractions of the frame) and 0 elsewhere."""
    image = np.zeros((height, width), np.uint8)
    for polygon in polygons:
        cv2.fillPoly(image, [_points(polygon, width, height)], value)
    return image


def _points(polygon: Polygon, width: int, height: int) -> npt.NDArray[np.int32]:
    return np.array([[round(x * width), round(y * height)] for x, y in polygon], np.int32)


class MotionGate:
    """Feed frames in order to `process`; not thread-safe (one gate per camera, one thread)."""

    def __init__(
        self,
        config: GateConfig | None = None,
        *,
        ignore: Sequence[Polygon] = (),
        zones: Sequence[Polygon] = (),
    ) -> None:
        self.config = config or GateConfig()
        c = self.config
        self._size = (c.width, c.height)
        self._step_size = (c.width * 2, c.height * 2)
        self._watched: Image | None = None
        if ignore:
            self._watched = cv2.bitwise_not(rasterize(ignore, c.width, c.height))
        watched_px = c.width * c.height if self._watched is None else cv2.countNonZero(self._watched)
        self._watched_px = max(1, watched_px)
        # zone i (1-based) is painted over earlier ones: a later zone wins where they overlap
        self._zones = np.zeros((c.height, c.width), np.uint8)
        for index, polygon in enumerate(zones, start=1):
            cv2.fillPoly(self._zones, [_points(polygon, c.width, c.height)], index)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        self._background: npt.NDArray[np.float32] | None = None
        self._settle = 0
        self.frames = 0
        self.recalibrations = 0

    def luma(self, frame: Image) -> Image:
        """The work image: small, grey, averaged enough to damp sensor noise."""
        if frame.shape[1] > self._step_size[0] * 1.5:
            frame = cv2.resize(frame, self._step_size, interpolation=cv2.INTER_LINEAR)
        if frame.ndim == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)

    def recalibrate(self) -> None:
        """Forget the background: the next frame becomes it (e.g. after the camera was moved)."""
        self._background = None

    def process(self, frame: Image) -> GateResult:
        c = self.config
        self.frames += 1
        gray = self.luma(frame)
        background = self._background
        if background is None:
            self._reset(gray)
            return GateResult(settling=True)
        if self._settle > 0:  # auto-exposure may need a few frames: learn fast, judge nothing
            self._settle -= 1
            cv2.accumulateWeighted(gray, background, 0.5)
            return GateResult(settling=True)

        # The background matched to this frame's brightness and contrast (mean and spread), so a
        # lighting ramp, a cloud or the grey picture of an IR switch is not motion.
        mean_now, std_now = (v[0][0] for v in cv2.meanStdDev(gray, mask=self._watched))
        mean_bg, std_bg = (v[0][0] for v in cv2.meanStdDev(background, mask=self._watched))
        gain = mean_now / mean_bg if mean_bg > 1.0 else 1.0
        contrast = std_now / std_bg if std_bg > 1.0 else 1.0
        reference = cv2.convertScaleAbs(background, alpha=contrast, beta=mean_now - contrast * mean_bg)
        diff = cv2.absdiff(gray, reference)
        _, changed = cv2.threshold(diff, c.threshold, 255, cv2.THRESH_BINARY)
        if self._watched is not None:
            changed = cv2.bitwise_and(changed, self._watched)
        share = cv2.countNonZero(changed) / self._watched_px

        if share > c.global_change or abs(gain - 1.0) > c.luma_jump or abs(contrast - 1.0) > 2 * c.luma_jump:
            self.recalibrations += 1
            self._reset(gray)
            return GateResult(changed=share, recalibrated=True, settling=True)
        if share == 0.0:
            cv2.accumulateWeighted(gray, background, c.alpha)
            return GateResult()
        if c.dilate:
            changed = cv2.dilate(changed, self._kernel, iterations=c.dilate)
        # Where something moves, the background learns 10x slower: a passing object leaves no
        # ghost trail behind it, and one that stops still joins the background in time.
        cv2.accumulateWeighted(gray, background, c.alpha, mask=cv2.bitwise_not(changed))
        cv2.accumulateWeighted(gray, background, c.alpha * 0.1, mask=changed)
        return GateResult(boxes=self._boxes(changed), changed=share)

    def _reset(self, gray: Image) -> None:
        self._background = gray.astype(np.float32)
        self._settle = self.config.settle_frames

    def _boxes(self, changed: Image) -> list[Box]:
        count, _, stats, centroids = cv2.connectedComponentsWithStats(changed, connectivity=8)
        boxes = []
        for label in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[label])
            if area < self.config.min_area:
                continue
            cx, cy = (int(v) for v in centroids[label])
            boxes.append(Box(x, y, w, h, area, int(self._zones[cy, cx])))
        boxes.sort(key=lambda b: b.area, reverse=True)
        return boxes[: self.config.max_boxes]
