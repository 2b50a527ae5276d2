"""Fixtures for the camera tests: real frames of `bikes.mp4`, scenes with known objects, clips."""

import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from tests.edge.roles.camera_scenes import Image, MovingObject, Scene, plate_and_frames

SIZE = (640, 360)


@pytest.fixture(name="street", scope="session")
def street_fixture() -> tuple[Image, list[Image]]:
    """The clip's background plate and 100 of its frames, at 640x360."""
    return plate_and_frames(SIZE, limit=100)


def crossing(street: tuple[Image, list[Image]], *, t0: float = 1.0, t1: float = 4.0, y: float = 150) -> MovingObject:
    """A patch of a real frame, crossing the street from left to right between t0 and t1."""
    _, frames = street
    patch = frames[40][120:200, 300:360].copy()
    patch = np.clip(patch.astype(np.int16) + 60, 0, 255).astype(np.uint8)  # a light-coloured vehicle
    return MovingObject(patch, 40.0, y, (SIZE[0] - 140) / (t1 - t0), 0.0, t0, t1)


def quiet_scene(street: tuple[Image, list[Image]], seconds: float, **options: object) -> Scene:
    return Scene(street[0], seconds, clock=False, tree=False, ramp=(0.0, 1.0), **options)  # type: ignore[arg-type]


def write_clip(frames: Iterable[Image], path: Path, fps: float = 25.0, gop: int = 25) -> Path:
    """Encode BGR frames as H.264 in MP4 with ffmpeg (a keyframe every `gop` frames)."""
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    proc = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
         "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-bf", "0",
         "-g", str(gop), "-pix_fmt", "yuv420p", str(path)],
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(first.tobytes())
    for frame in frames:
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    assert proc.wait(60) == 0, "ffmpeg could not encode the clip"
    return path
