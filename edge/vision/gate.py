"""The motion gate: which parts of a frame changed, at the least cost per frame.

Per frame: shrink to a small luma image (default 160x90, lightly blurred), compare it with a
running-average background matched to the frame's brightness and contrast, and count a pixel
as changed when it lies outside the range of the background around it (so a shaking pole's
edges do not count) by more than its own noise allows (a per-pixel running mean square of the
difference, so a dark, noisy night and a bright, clean day each get their own threshold between
`threshold_min` and `threshold`). Changed pixels that stand still from frame to frame for
`still_frames` frames join the background (ghosts where an object stood when the background was
taken, objects that stopped). What is left becomes boxes. Everything after the first resize
works on ~14,000 pixels, so the resize dominates; it is done in two steps (a cheap bilinear step
to twice the work size, then an area average) because a single area resize of a 1280x720 frame
costs more than the whole rest of the gate.

A sudden change of the whole scene (headlights, a cloud, the camera's IR switch, a scene cut)
is not motion: when most of the image changes at once, or the brightness jumps and the matching
does not explain the new picture, the background is reset to the new scene and the gate reports
nothing for `settle_frames` frames.
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
    threshold: int = 18  # luma difference (0..255) that always counts as a change (the ceiling)
    threshold_min: int = 5  # ... and the floor: where the picture is calm, `noise_k` sigma decides
    noise_k: float = 4.0  # a pixel changed if it differs by more than noise_k x its own noise
    shift: int = 1  # work pixels an edge of the background may move (pole shake) without counting
    still_frames: int = 3  # a changed pixel unchanged from frame to frame this long joins the background
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
        if c.shift:
            # a shaking camera shows new content along the picture's edges: they are not watched
            if self._watched is None:
                self._watched = np.full((c.height, c.width), 255, np.uint8)
            b = c.shift
            self._watched[:b, :] = self._watched[-b:, :] = self._watched[:, :b] = self._watched[:, -b:] = 0
        watched_px = c.width * c.height if self._watched is None else cv2.countNonZero(self._watched)
        self._watched_px = max(1, watched_px)
        # zone i (1-based) is painted over earlier ones: a later zone wins where they overlap
        self._zones = np.zeros((c.height, c.width), np.uint8)
        for index, polygon in enumerate(zones, start=1):
            cv2.fillPoly(self._zones, [_points(polygon, c.width, c.height)], index)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        self._shift_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * c.shift + 1, 2 * c.shift + 1))
        self._background: npt.NDArray[np.float32] | None = None
        # per pixel: the mean square of its difference from the background while nothing moves
        # there (its noise), the threshold derived from it, and for how many frames it has been
        # changed but still (a ghost, a stopped object)
        # (it starts where the ceiling is the threshold, and learns down from there)
        self._noise = np.full((c.height, c.width), (c.threshold / c.noise_k) ** 2, np.float32)
        self._threshold = np.full((c.height, c.width), c.threshold, np.uint8)
        self._still = np.zeros((c.height, c.width), np.uint8)
        self._previous: Image | None = None
        self._settle = 0
        self.frames = 0
        self.recalibrations = 0
        self.absorbed = 0  # pixels that joined the background because they stood still

    def luma(self, frame: Image) -> Image:
        """The work image: small, grey, averaged enough to damp sensor noise."""
        if frame.shape[1] > self._step_size[0] * 1.5:
            frame = cv2.resize(frame, self._step_size, interpolation=cv2.INTER_LINEAR)
        if frame.ndim == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (3, 3), 0)

    def recalibrate(self) -> None:
        """Forget the background: the next frame becomes it (e.g. after the camera was moved)."""
        self._background = None

    def process(self, frame: Image) -> GateResult:
        c = self.config
        self.frames += 1
        gray = self.luma(frame)
        background = self._background
        previous, self._previous = self._previous, gray
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
        offset = mean_now - contrast * mean_bg
        reference = cv2.convertScaleAbs(background, alpha=contrast, beta=offset)
        if c.shift:
            # how far the pixel lies outside the range of the background around it: an edge that
            # moved by up to `shift` work pixels (a shaking pole) is not a change
            low = cv2.erode(reference, self._shift_kernel)
            high = cv2.dilate(reference, self._shift_kernel)
            diff = cv2.max(cv2.subtract(low, gray), cv2.subtract(gray, high))
        else:
            diff = cv2.absdiff(gray, reference)
        changed = cv2.compare(diff, self._threshold, cv2.CMP_GT)
        if self._watched is not None:
            changed = cv2.bitwise_and(changed, self._watched)
        share = cv2.countNonZero(changed) / self._watched_px

        # A jump of brightness or contrast that the matching explains (little left changed: a
        # uniform flash, an IR switch) is judged like any frame, but not learnt; one it does not
        # explain (a headlight cone, auto-exposure hunting), or most of the picture changed, resets.
        jump = abs(gain - 1.0) > c.luma_jump or abs(contrast - 1.0) > 2 * c.luma_jump
        if share > c.global_change or (jump and share > c.global_change / 4):
            self.recalibrations += 1
            self._reset(gray)
            return GateResult(changed=share, recalibrated=True, settling=True)
        if share and c.still_frames and previous is not None and not jump:
            share = self._absorb_still(gray, previous, changed, background, contrast, offset)
        if share == 0.0:
            if not jump:
                cv2.accumulateWeighted(gray, background, c.alpha)
                self._learn_noise(diff, None)
            return GateResult()
        if c.dilate:
            changed = cv2.dilate(changed, self._kernel, iterations=c.dilate)
        if not jump:
            # Where something moves, the background learns 10x slower: a passing object leaves
            # no ghost trail behind it (one that stops joins the background after still_frames).
            calm = cv2.bitwise_not(changed)
            cv2.accumulateWeighted(gray, background, c.alpha, mask=calm)
            cv2.accumulateWeighted(gray, background, c.alpha * 0.1, mask=changed)
            self._learn_noise(diff, calm)
        return GateResult(boxes=self._boxes(changed), changed=share)

    def _absorb_still(
        self, gray: Image, previous: Image, changed: Image, background: npt.NDArray[np.float32],
        contrast: float, offset: float,
    ) -> float:
        """Blobs of changed pixels that have not moved for `still_frames` frames join the
        background (in its own brightness scale); returns the share still changed.

        A ghost (where an object stood when the background was taken) never moves; neither does
        an object that stopped. A moving object's blob keeps changing between frames."""
        moving = cv2.compare(cv2.absdiff(gray, previous), self._threshold, cv2.CMP_GT)
        count, labels = cv2.connectedComponents(changed, connectivity=8)
        flat = labels.ravel()
        size = np.bincount(flat, minlength=count)
        moved = np.bincount(flat, weights=(moving.ravel() > 0), minlength=count)
        # a blob moves if at least 2 and a tenth of its pixels changed since the last frame
        # (not every pixel of a moving object does: its inside may look the same frame to frame)
        alive = (moved >= 2) & (moved * 10 >= size)
        alive[0] = True  # the unchanged rest
        still = ~alive[labels]
        self._still = np.where(still, self._still + np.uint8(1), np.uint8(0)).astype(np.uint8)
        ripe = self._still >= self.config.still_frames
        if not ripe.any():
            return cv2.countNonZero(changed) / self._watched_px
        background[ripe] = (gray[ripe].astype(np.float32) - offset) / (contrast if contrast > 0.01 else 1.0)
        self._still[ripe] = 0
        changed[ripe] = 0
        self.absorbed += int(np.count_nonzero(ripe))
        return cv2.countNonZero(changed) / self._watched_px

    def _learn_noise(self, diff: Image, calm: Image | None) -> None:
        """Each pixel's noise (mean square difference where nothing moves) -> its threshold."""
        c = self.config
        square = cv2.multiply(diff, diff, dtype=cv2.CV_32F)
        cv2.accumulateWeighted(square, self._noise, c.alpha, mask=calm)
        threshold = cv2.sqrt(self._noise) * c.noise_k
        np.clip(threshold, c.threshold_min, c.threshold, out=threshold)
        self._threshold = threshold.astype(np.uint8)

    def _reset(self, gray: Image) -> None:
        # The noise stays: a flash or an IR switch changes the picture, not the sensor's noise.
        self._background = gray.astype(np.float32)
        self._still[:] = 0
        self._settle = self.config.settle_frames

    def _boxes(self, changed: Image) -> list[Box]:
        count, _, stats, centroids = cv2.connectedComponentsWithStats(changed, connectivity=8)
        boxes = []
        grow = self.config.dilate  # the dilation joined fragments; its growth is not the object's
        for label in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[label])
            if area < self.config.min_area:
                continue
            if w > 2 * grow:
                x, w = x + grow, w - 2 * grow
            if h > 2 * grow:
                y, h = y + grow, h - 2 * grow
            cx, cy = (int(v) for v in centroids[label])
            boxes.append(Box(x, y, w, h, area, int(self._zones[cy, cx])))
        boxes.sort(key=lambda b: b.area, reverse=True)
        return boxes[: self.config.max_boxes]
