"""The camera role's motion gate: speed per core, and what it forwards, against ground truth.

Speed (single thread, `cv2.setNumThreads(1)`, pre-decoded frames, median of rounds) at 1280x720
and 640x360, each compared with baselines measured in the same run on the same frames:
decoding the same video (H.264, made from `bikes.mp4` at that size with ffmpeg) and a bare copy
of each frame (the memory traffic any per-frame work pays).

Quality, on scenes made by `tests/edge/roles/camera_scenes.py` (known objects composited onto
real frames of `bikes.mp4`, lighting ramp, clouds, headlights, an IR switch, sensor noise, an
on-screen clock and a swaying tree, both masked), run through the role's own pipeline (gate,
events, snapshots):
- quiet: 10 minutes, no objects: every event is a false event;
- busy: objects crossing every few seconds: recall (objects covered by an event overlapping
  them in time and space) and false events (events that overlap no object).
Bytes forwarded are the event messages as the agent encodes them (envelope included) plus the
snapshot JPEGs, compared with (a) the raw decoded frames and (b) the source clip's own H.264
bitrate over the same duration.

    .venv/bin/python benchmarks/camera_gate.py [--rounds 5] [--quiet-min 10] [--busy-min 5]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.roles.camera.pipeline import CameraPipeline, MotionMessage
from edge.roles.camera.settings import CameraSettings
from edge.roles.camera.snapshots import SnapshotStore
from edge.roles.camera.source import Frame
from edge.uplink import encode
from edge.vision.gate import MotionGate
from tests.edge.roles.camera_scenes import (
    CLOCK,
    TREE,
    MovingObject,
    Scene,
    bikes_path,
    make_objects,
    plate_and_frames,
    read_frames,
)

SIZES = [(1280, 720), (640, 360)]
SPEED_FRAMES = 60
ENVELOPE = {"v": 1, "ses": 1_780_000_000, "seq": 123_456, "ts": 1_795_766_432_000}


def per_second(work: Any, items: int, rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        rates.append(items / (time.perf_counter() - started))
    return statistics.median(rates)


def decode_rate(path: Path, rounds: int) -> float:
    def decode() -> None:
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        while capture.grab():
            capture.retrieve()
        capture.release()

    return per_second(decode, int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT)), rounds)


def speed(rounds: int, workdir: Path) -> list[dict[str, Any]]:
    source = read_frames(bikes_path(), SPEED_FRAMES)
    rows = []
    for width, height in SIZES:
        frames = [cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in source]
        video = workdir / f"bikes-{width}x{height}.mp4"
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(bikes_path()), "-vf",
             f"scale={width}:{height}", "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-an", str(video)],
            check=True,
        )
        gate = MotionGate()

        def run_gate(gate: MotionGate = gate, frames: list[Any] = frames) -> None:
            for f in frames * 4:
                gate.process(f)

        def copy_only(frames: list[Any] = frames) -> None:
            for f in frames * 4:
                f.copy()

        gate_fps = per_second(run_gate, len(frames) * 4, rounds)
        copy_fps = per_second(copy_only, len(frames) * 4, rounds)
        dec_fps = decode_rate(video, rounds)
        rows.append({"size": f"{width}x{height}", "gate_fps": gate_fps, "decode_fps": dec_fps,
                     "copy_fps": copy_fps})
    return rows


@dataclass
class Outcome:
    frames: int
    duration_s: float
    events: list[dict[str, Any]]
    message_bytes: int
    snapshot_bytes: int
    snapshots: int
    motion_frames: int
    raw_bytes: int


def run_scene(scene: Scene, camera: CameraSettings, workdir: Path) -> Outcome:
    store = SnapshotStore(workdir / f"snap-{scene.seed}", ref_prefix="snap/bench", max_bytes=2**31,
                          max_files=100_000)
    pipeline = CameraPipeline(camera, store=store)
    messages: list[tuple[float, MotionMessage]] = []
    h, w = scene.plate.shape[:2]
    t = 0.0
    for t, image in scene:
        messages.extend((t, m) for m in pipeline.process(Frame(t, image)))
    messages.extend((t, m) for m in pipeline.close(t))
    events: dict[str, dict[str, Any]] = {}
    message_bytes = 0
    for at, m in messages:
        fields = {"id": m.event_id, "type": m.event_type, "phase": m.phase, "category": m.category,
                  "data": m.data, **({"snapshot": m.snapshot} if m.snapshot else {})}
        size = len(encode({**ENVELOPE, **fields}))
        assert size < 8192, size
        message_bytes += size
        event = events.setdefault(m.event_id, {"start": at, "end": at, "bbox": None})
        event["end"] = at - (camera.end_after_s if m.phase == "end" else 0.0)
        if m.phase == "end":
            event["bbox"] = m.data["bbox"]
    return Outcome(pipeline.frames, scene.duration_s, list(events.values()), message_bytes,
                   pipeline.snapshot_bytes, pipeline.snapshots, pipeline.motion_frames, pipeline.frames * w * h * 3)


def overlaps(event: dict[str, Any], obj: MovingObject, slack_s: float = 0.5) -> bool:
    if event["end"] < obj.t0 - slack_s or event["start"] > obj.t1 + slack_s:
        return False
    if event["bbox"] is None:
        return True
    x, y, w, h = event["bbox"]
    x0, y0, x1, y1 = obj.path_box()
    return x < x1 and x0 < x + w and y < y1 and y0 < y + h


def quality(quiet_min: float, busy_min: float, workdir: Path) -> dict[str, Any]:
    size = (640, 360)
    plate, frames = plate_and_frames(size)
    camera = CameraSettings.model_validate({
        "id": "bench", "url": "scene", "category": "traffic_safety",
        "ignore": [[(CLOCK[0], CLOCK[1]), (CLOCK[2], CLOCK[1]), (CLOCK[2], CLOCK[3]), (CLOCK[0], CLOCK[3])],
                   [(TREE[0], TREE[1]), (TREE[2], TREE[1]), (TREE[2], TREE[3]), (TREE[0], TREE[3])]],
        # the policy limit is not under test here: every object should be able to start an event
        "rate_per_min": 60, "burst": 10,
    })
    bytes_per_s_h264 = bikes_path().stat().st_size / (len(frames) / 25.0)

    quiet_s = quiet_min * 60
    quiet = Scene(plate, quiet_s, seed=11, noise_sigma=5.0,
                  clouds=[(s, 12.0) for s in np.arange(45.0, quiet_s, 97.0)],
                  flashes=list(np.arange(30.0, quiet_s, 61.0)),
                  ir_switches=[(s, 40.0) for s in np.arange(150.0, quiet_s, 300.0)])
    busy_s = busy_min * 60
    objects = make_objects(plate, frames, count=int(busy_s / 9), start=2.0, every=9.0, seed=5,
                           keep_out=[CLOCK, TREE])
    busy = Scene(plate, max(busy_s, objects[-1].t1 + 3), objects=objects, seed=12, noise_sigma=5.0,
                 clouds=[(s, 12.0) for s in np.arange(20.0, busy_s, 83.0)],
                 flashes=list(np.arange(40.0, busy_s, 67.0)),
                 ir_switches=[(s, 30.0) for s in np.arange(100.0, busy_s, 200.0)])

    out: dict[str, Any] = {}
    for name, scene in (("quiet", quiet), ("busy", busy)):
        result = run_scene(scene, camera, workdir)
        matched = [o for o in scene.objects if any(overlaps(e, o) for e in result.events)]
        false = [e for e in result.events if not any(overlaps(e, o) for o in scene.objects)]
        forwarded = result.message_bytes + result.snapshot_bytes
        out[name] = {
            "minutes": round(result.duration_s / 60, 2),
            "frames": result.frames,
            "objects": len(scene.objects),
            "events": len(result.events),
            "recall": len(matched) / len(scene.objects) if scene.objects else None,
            "false_events": len(false),
            "false_per_10min": len(false) / (result.duration_s / 600),
            "frames_forwarded": result.snapshots / result.frames,
            "frames_with_motion": result.motion_frames / result.frames,
            "bytes_forwarded": forwarded,
            "vs_raw": forwarded / result.raw_bytes,
            "vs_h264": forwarded / (bytes_per_s_h264 * result.duration_s),
        }
    out["h264_bytes_per_s"] = bytes_per_s_h264
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quiet-min", type=float, default=10.0)
    parser.add_argument("--busy-min", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="camera-bench-") as tmp:
        workdir = Path(tmp)
        rows = speed(args.rounds, workdir)
        print(f"gate speed, one core, pre-decoded frames (median of {args.rounds} rounds):")
        for r in rows:
            print(f"  {r['size']:>9}: gate {r['gate_fps']:8.0f} fps | decode H.264 {r['decode_fps']:6.0f} fps "
                  f"(gate/decode {r['gate_fps'] / r['decode_fps']:5.1f}x) | frame copy {r['copy_fps']:7.0f} fps "
                  f"(gate/copy {r['gate_fps'] / r['copy_fps']:4.2f}x)")
        q = quality(args.quiet_min, args.busy_min, workdir)
    print("quality (640x360 scenes, 25 fps, from bikes.mp4):")
    for name in ("quiet", "busy"):
        s = q[name]
        recall = "n/a" if s["recall"] is None else f"{s['recall']:.3f}"
        print(f"  {name:>5}: {s['minutes']} min, {s['objects']} objects, {s['events']} events, recall {recall}, "
              f"false events {s['false_events']} ({s['false_per_10min']:.2f} per 10 min)")
        print(f"         frames forwarded {s['frames_forwarded']:.5f} "
              f"(frames with motion {s['frames_with_motion']:.3f}); "
              f"bytes forwarded {s['bytes_forwarded']} = {100 * s['vs_raw']:.4f} % of raw frames, "
              f"{100 * s['vs_h264']:.3f} % of the clip's H.264 ({q['h264_bytes_per_s'] / 1000:.0f} kB/s)")
    if args.json:
        args.json.write_text(json.dumps({"speed": rows, "quality": q}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
