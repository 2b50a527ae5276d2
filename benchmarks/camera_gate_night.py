"""The motion gate at night, after flashes and under pole shake, side by side with Frigate's detector.

Footage (`tests/edge/roles/camera_scenes.py`, the builder `benchmarks/camera_gate.py` uses): the
background plate of the real `bikes.mp4` clip with objects cut from its real frames moving on
known paths, at 640x360 and 5 frames per second (Frigate's default detect rate):
- night: brightness scaled to 0.2-0.35 (one value per scene) under sensor noise (sigma 4 of
  255, added after the scaling, as a sensor adds it), objects of 12-27 px and of person-to-car
  size, headlight flashes (+60 % for 1 s) while an object is in view;
- shake: day and night scenes with pole shake (the picture shifted by up to 4 px for 2-6 s) and
  flashes and cones while an object is in view;
- quiet: no objects at all (night and day), with flashes, cones (night), clouds and shake.
The on-screen clock and the swaying tree are masked for both detectors.

Both detectors see the same frames: the gate the BGR frame (what the camera role hands it),
Frigate's `ImprovedMotionDetector` the Y plane of its I420 conversion (what Frigate's ffmpeg
hands it; the conversion is not timed), with `MotionConfig`'s defaults read from the copy's
source. The boxes of both go through the same `EpisodeTracker` (3 frames to start, ends 2 s
after the last motion, no rate limit), so "events" mean the same for both.

Scores, per object, with a tolerance of +-5 frames:
- recall: an object is found if, in some frame from 5 before its first to 5 after its last, a box
  that is part of an event overlaps where the object is within those +-5 frames;
- false events: events that overlap no object in time (+-5 frames) and space, per 15 minutes;
- quiet frames flagged: frames more than 5 frames away from every object that carry a box;
- speed: frames per second of each on the same pre-rendered frames, one thread, median of rounds.

Frigate's code is not part of this repository: pass a directory holding `frigate/motion/
improved_motion.py` and `frigate/config/camera/motion.py` (a checkout of
github.com/blakeblackshear/frigate) with --frigate; without it only the gate is measured. The
few modules that file imports beyond numpy, scipy and OpenCV are replaced by stubs here.

    .venv/bin/python benchmarks/camera_gate_night.py [--frigate DIR] [--minutes 10] [--rounds 5] [--speed-only]
"""

import argparse
import ast
import importlib.util
import json
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.vision.episodes import EpisodeConfig, EpisodeTracker
from edge.vision.gate import Box, GateConfig, GateResult, MotionGate, rasterize
from tests.edge.roles.camera_scenes import (
    CLOCK,
    TREE,
    Image,
    MovingObject,
    Scene,
    make_objects,
    plate_and_frames,
    rect_polygon,
)

SIZE = (640, 360)
FPS = 5.0
TOLERANCE = 5  # frames
NIGHT_NOISE = 4.0
SMALL = (12, 27)

Detect = Callable[[Image], list[tuple[int, int, int, int]]]  # frame -> boxes x0, y0, x1, y1 in source px


# -- the detectors ----------------------------------------------------------------------------


def gate_detector(config: GateConfig | None = None) -> tuple[Detect, MotionGate]:
    w, h = SIZE
    gate = MotionGate(config, ignore=[rect_polygon(CLOCK), rect_polygon(TREE)])
    sx, sy = w / gate.config.width, h / gate.config.height

    def detect(frame: Image) -> list[tuple[int, int, int, int]]:
        return [(round(b.x * sx), round(b.y * sy), round((b.x + b.w) * sx), round((b.y + b.h) * sy))
                for b in gate.process(frame).boxes]

    return detect, gate


def _motion_defaults(source: Path) -> dict[str, Any]:
    """`MotionConfig`'s field defaults, read from Frigate's source (not imported: pydantic models)."""
    tree = ast.parse(source.read_text())
    out: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "MotionConfig":
            for item in node.body:
                if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                    continue
                if isinstance(item.value, ast.Call):
                    for kw in item.value.keywords:
                        if kw.arg == "default":
                            try:
                                out[item.target.id] = ast.literal_eval(kw.value)
                            except ValueError:
                                pass
    return out


def load_frigate(root: Path) -> tuple[type, dict[str, Any]]:
    """Frigate's `ImprovedMotionDetector` class from a local checkout, with stubs for its imports."""
    stubs = {
        "frigate": types.ModuleType("frigate"),
        "frigate.camera": types.ModuleType("frigate.camera"),
        "frigate.config": types.ModuleType("frigate.config"),
        "frigate.config.config": types.ModuleType("frigate.config.config"),
        "frigate.motion": types.ModuleType("frigate.motion"),
        "frigate.util": types.ModuleType("frigate.util"),
        "frigate.util.image": types.ModuleType("frigate.util.image"),
    }
    stubs["frigate.camera"].PTZMetrics = object  # type: ignore[attr-defined]
    stubs["frigate.config.config"].RuntimeMotionConfig = object  # type: ignore[attr-defined]
    stubs["frigate.motion"].MotionDetector = object  # type: ignore[attr-defined]
    stubs["frigate.util.image"].grab_cv2_contours = lambda c: c[0] if len(c) == 2 else c[1]  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        path = root / "frigate/motion/improved_motion.py"
        spec = importlib.util.spec_from_file_location("frigate_improved_motion", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return module.ImprovedMotionDetector, _motion_defaults(root / "frigate/config/camera/motion.py")


def frigate_detector(cls: type, defaults: dict[str, Any]) -> tuple[Detect, Any]:
    w, h = SIZE
    mask = 255 - rasterize([rect_polygon(CLOCK), rect_polygon(TREE)], w, h)
    config = types.SimpleNamespace(**defaults, rasterized_mask=mask)
    detector = cls((h, w), config, int(FPS))

    def detect(frame: Image) -> list[tuple[int, int, int, int]]:
        return list(detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)))

    return detect, detector


# -- the footage ------------------------------------------------------------------------------


def flashes_in_view(objects: Sequence[MovingObject], every: int, first: int = 0) -> list[float]:
    """A headlight flash while every `every`-th object is in view (a third into its crossing)."""
    return [o.t0 + (o.t1 - o.t0) / 3 for o in objects[first::every]]


def scenes(minutes: float) -> list[tuple[str, Scene]]:
    plate, frames = plate_and_frames(SIZE)
    seconds = minutes * 60
    keep_out = [CLOCK, TREE]

    def objects(seed: int, size: tuple[int, int] | None, every: float) -> list[MovingObject]:
        return make_objects(plate, frames, count=int(seconds / every), start=3.0, every=every, seed=seed,
                            keep_out=keep_out, size=size)

    def shakes(seed: int) -> list[tuple[float, float]]:
        rng = np.random.default_rng(seed)
        return [(float(s), float(rng.uniform(2.0, 6.0))) for s in np.arange(25.0, seconds, 53.0)]

    out: list[tuple[str, Scene]] = []
    for index, brightness in enumerate((0.2, 0.27, 0.35)):
        small = objects(30 + index, SMALL, 7.0)
        out.append((f"night {brightness:.2f}, 12-27 px", Scene(
            plate, small[-1].t1 + 3, fps=FPS, objects=small, seed=40 + index, noise_sigma=NIGHT_NOISE,
            brightness=brightness, ramp=(0.1, 300.0), flashes=flashes_in_view(small, 4),
            cones=flashes_in_view(small, 4, 2))))
    large = objects(33, None, 9.0)
    out.append(("night 0.25, person-car size", Scene(
        plate, large[-1].t1 + 3, fps=FPS, objects=large, seed=43, noise_sigma=NIGHT_NOISE, brightness=0.25,
        ramp=(0.1, 300.0), flashes=flashes_in_view(large, 3), cones=flashes_in_view(large, 3, 1))))
    mixed = sorted(objects(34, SMALL, 14.0) + objects(35, None, 14.0), key=lambda o: o.t0)
    out.append(("day shake, mixed sizes", Scene(
        plate, max(o.t1 for o in mixed) + 3, fps=FPS, objects=mixed, seed=44, noise_sigma=4.0,
        shakes=shakes(1), flashes=flashes_in_view(mixed, 4), cones=flashes_in_view(mixed, 4, 2),
        clouds=[(s, 12.0) for s in np.arange(40.0, seconds, 90.0)])))
    night_mixed = sorted(objects(36, SMALL, 14.0) + objects(37, None, 14.0), key=lambda o: o.t0)
    out.append(("night 0.3 shake, mixed sizes", Scene(
        plate, max(o.t1 for o in night_mixed) + 3, fps=FPS, objects=night_mixed, seed=45, noise_sigma=NIGHT_NOISE,
        brightness=0.3, ramp=(0.1, 300.0), shakes=shakes(2), flashes=flashes_in_view(night_mixed, 3),
        cones=flashes_in_view(night_mixed, 3, 1))))
    out.append(("quiet night 0.25", Scene(
        plate, seconds, fps=FPS, seed=46, noise_sigma=NIGHT_NOISE, brightness=0.25, ramp=(0.1, 300.0),
        shakes=shakes(3), flashes=list(np.arange(30.0, seconds, 61.0)), cones=list(np.arange(50.0, seconds, 61.0)))))
    out.append(("quiet day", Scene(
        plate, seconds, fps=FPS, seed=47, noise_sigma=4.0, shakes=shakes(4),
        flashes=list(np.arange(30.0, seconds, 61.0)), clouds=[(s, 12.0) for s in np.arange(45.0, seconds, 97.0)],
        ir_switches=[(s, 40.0) for s in np.arange(150.0, seconds, 300.0)])))
    return out


# -- scoring ----------------------------------------------------------------------------------


@dataclass
class Score:
    frames: int = 0
    seconds: float = 0.0
    objects: int = 0
    found: int = 0
    small_objects: int = 0
    small_found: int = 0
    events: int = 0
    false_events: int = 0
    quiet_frames: int = 0
    quiet_flagged: int = 0
    longest_quiet_run: int = 0  # consecutive quiet frames with a box (a ghost, a shake)
    missed: list[str] = field(default_factory=list)

    def add(self, other: "Score") -> None:
        for name in ("frames", "seconds", "objects", "found", "small_objects", "small_found", "events",
                     "false_events", "quiet_frames", "quiet_flagged"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.longest_quiet_run = max(self.longest_quiet_run, other.longest_quiet_run)
        self.missed += other.missed

    def figures(self) -> dict[str, Any]:
        return {
            "objects": self.objects, "recall": self.found / max(1, self.objects),
            "small_objects": self.small_objects, "small_recall": self.small_found / max(1, self.small_objects),
            "events": self.events, "false_events": self.false_events,
            "false_per_15min": self.false_events / (self.seconds / 900),
            "quiet_flagged": self.quiet_flagged / max(1, self.quiet_frames),
            "longest_quiet_run": self.longest_quiet_run, "minutes": self.seconds / 60,
        }


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _where(obj: MovingObject, t: float, fps: float) -> tuple[int, int, int, int]:
    """Everything the object covers within +-TOLERANCE frames of t."""
    h, w = obj.patch.shape[:2]
    xs, ys = [], []
    for dt in (-TOLERANCE / fps, 0.0, TOLERANCE / fps):
        x, y = obj.at(min(max(t + dt, obj.t0), obj.t1))
        xs.append(x)
        ys.append(y)
    return min(xs), min(ys), max(xs) + w, max(ys) + h


class Scorer:
    """One detector's boxes over a scene, frame by frame, then its score."""

    def __init__(self, scene: Scene, detect: Detect) -> None:
        self.scene = scene
        self.detect = detect
        self.tracker = EpisodeTracker(EpisodeConfig(start_frames=3, end_after_s=2.0, rate_per_min=600.0, burst=100))
        self.per_frame: list[list[tuple[int, int, int, int]]] = []
        self.spans: dict[int, list[Any]] = {}  # episode number -> [start t, last motion t, union]

    def feed(self, t: float, frame: Image) -> None:
        boxes = self.detect(frame)
        self.per_frame.append(boxes)
        result = GateResult(boxes=[Box(x0, y0, x1 - x0, y1 - y0, (x1 - x0) * (y1 - y0)) for x0, y0, x1, y1 in boxes])
        self.tracker.update(t, result, frame)
        for episode in self.tracker.open_episodes:
            episode.best_frame = None  # keep no frames
            self.spans[episode.number] = [episode.started_at, episode.last_motion_at, episode.union]

    def score(self) -> Score:
        scene, per_frame, fps = self.scene, self.per_frame, self.scene.fps
        frames = len(per_frame)
        in_event = [False] * frames
        for start, last, _ in self.spans.values():
            for i in range(round(start * fps), min(frames, round(last * fps) + 1)):
                in_event[i] = True
        out = Score(frames=frames, seconds=frames / fps, objects=len(scene.objects), events=len(self.spans))
        near = [False] * frames
        for obj in scene.objects:
            first, last = round(obj.t0 * fps), round(obj.t1 * fps)
            window = range(max(0, first - TOLERANCE), min(frames, last + TOLERANCE + 1))
            for i in window:
                near[i] = True
            hit = any(in_event[i] and any(_overlap(b, _where(obj, i / fps, fps)) for b in per_frame[i]) for i in window)
            small = max(obj.patch.shape[:2]) <= SMALL[1]
            out.found += hit
            out.small_objects += small
            out.small_found += small and hit
            if not hit:
                out.missed.append(f"{obj.patch.shape[1]}x{obj.patch.shape[0]} px at {obj.t0:.1f}-{obj.t1:.1f} s")
        slack = TOLERANCE / fps
        for start, last, union in self.spans.values():
            if not any(start - slack <= o.t1 and o.t0 <= last + slack and _overlap(union, o.path_box())
                       for o in scene.objects):
                out.false_events += 1
        run = 0
        for i, boxes in enumerate(per_frame):
            if near[i]:
                run = 0
                continue
            out.quiet_frames += 1
            if boxes:
                out.quiet_flagged += 1
                run += 1
                out.longest_quiet_run = max(out.longest_quiet_run, run)
            else:
                run = 0
        return out


def speed(frames: Sequence[Image], make: Callable[[], Detect], frigate: Callable[[], Any] | None,
          rounds: int) -> tuple[float, float | None, float | None]:
    """Frames per second of the gate and of Frigate's detector, measured in alternating rounds (so
    a change of the machine's load hits both), and the median of the per-round ratios."""
    yuv = [cv2.cvtColor(f, cv2.COLOR_BGR2YUV_I420) for f in frames]  # what Frigate's ffmpeg delivers
    gate_rates, frigate_rates, ratios = [], [], []
    for _ in range(rounds):
        detect = make()
        started = time.perf_counter()
        for frame in frames:
            detect(frame)
        gate_rates.append(len(frames) / (time.perf_counter() - started))
        if frigate is None:
            continue
        detector = frigate()
        started = time.perf_counter()
        for planes in yuv:
            detector.detect(planes)
        frigate_rates.append(len(yuv) / (time.perf_counter() - started))
        ratios.append(gate_rates[-1] / frigate_rates[-1])
    if frigate is None:
        return statistics.median(gate_rates), None, None
    return statistics.median(gate_rates), statistics.median(frigate_rates), statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frigate", type=Path, help="a checkout of github.com/blakeblackshear/frigate")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of each scene")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--missed", action="store_true", help="list the objects each detector missed")
    parser.add_argument("--speed-only", action="store_true", help="skip the scenes' scores")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    frigate = load_frigate(args.frigate) if args.frigate else None

    detectors: dict[str, Callable[[], Detect]] = {"gate": lambda: gate_detector()[0]}
    if frigate is not None:
        detectors["frigate"] = lambda: frigate_detector(*frigate)[0]
    totals = {name: Score() for name in detectors}
    report: dict[str, Any] = {"scenes": {}}
    footage = scenes(args.minutes)
    speed_frames = [scene.render(index) for _, scene in footage[:6] for index in range(100, 200)]
    print(f"640x360 at {FPS:g} fps, objects from bikes.mp4, tolerance +-{TOLERANCE} frames")
    for name, scene in [] if args.speed_only else footage:
        scorers = {detector: Scorer(scene, make()) for detector, make in detectors.items()}
        for t, image in scene:
            for scorer in scorers.values():
                scorer.feed(t, image)
        report["scenes"][name] = {}
        for detector, scorer in scorers.items():
            s = scorer.score()
            totals[detector].add(s)
            f = s.figures()
            report["scenes"][name][detector] = f
            small = f" (12-27 px {s.small_found}/{s.small_objects})" if s.small_objects else ""
            print(f"  {name:<30} {detector:>7}: {s.found}/{s.objects} objects{small}, {s.events} events, "
                  f"{s.false_events} false, quiet frames flagged {100 * f['quiet_flagged']:.1f} % "
                  f"(longest run {s.longest_quiet_run})")
            if args.missed and s.missed:
                print("      missed: " + "; ".join(s.missed))
    print("all scenes:" if not args.speed_only else "", end="" if args.speed_only else "\n")
    for detector, s in [] if args.speed_only else totals.items():
        f = s.figures()
        report[detector] = f
        print(f"  {detector:>7}: recall {f['recall']:.3f} ({s.found}/{s.objects}; 12-27 px "
              f"{f['small_recall']:.3f}, {s.small_found}/{s.small_objects}), false events {s.false_events} in "
              f"{f['minutes']:.0f} min = {f['false_per_15min']:.2f} per 15 min, quiet frames flagged "
              f"{100 * f['quiet_flagged']:.2f} % of {s.quiet_frames}")
    gate_fps, frigate_fps, ratio = speed(
        speed_frames, detectors["gate"], (lambda: frigate_detector(*frigate)[1]) if frigate else None, args.rounds)
    report["gate_fps"] = gate_fps
    line = f"speed, one thread, {len(speed_frames)} frames 640x360 (median of {args.rounds}): gate {gate_fps:.0f} fps"
    if frigate_fps is not None:
        report["frigate_fps"], report["ratio"] = frigate_fps, ratio
        line += (f", Frigate ImprovedMotionDetector {frigate_fps:.0f} fps, ratio {ratio:.2f}x "
                 "(median of the rounds' ratios)")
    print(line)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
