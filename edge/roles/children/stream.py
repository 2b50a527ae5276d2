"""RTSP liveness of a child camera: frames decoded by the camera role's reader (FrameSource, its
thread, bounded queue and reconnect policy), judged here.

- `no_frames`: no frame decoded within `frame_within_s` (N) — the stream cannot be opened, or
  stopped giving pictures;
- `frozen`: frames keep coming but the picture has not changed for `frozen_after_s` (M): each
  frame taken is shrunk to 64x36 grey and compared with the reference frame; a mean absolute
  difference above `frozen_diff` makes it the new reference, else the picture is "the same";
- `live` otherwise, with the decoded width, height and fps (frames decoded per second since the
  last look).

Imported only when a child has an `rtsp_url` (it needs OpenCV: the camera extra).
"""

import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge.backoff import Backoff
from edge.roles.camera.source import FrameSource

THUMB = (64, 36)
TAKE_MAX = 8  # frames judged per look; the reader's queue (4) drops the older ones meanwhile


@dataclass(slots=True)
class StreamFigures:
    state: str  # live, no_frames, frozen
    frame_age_s: float | None
    same_s: float  # how long the picture has not changed
    width: int
    height: int
    fps: float
    reconnects: int

    def body(self) -> dict[str, Any]:
        return {"stream": self.state, "frame_age_s": None if self.frame_age_s is None else round(self.frame_age_s, 1),
                "same_s": round(self.same_s, 1), "width": self.width, "height": self.height,
                "fps": round(self.fps, 1), "reconnects": self.reconnects}


class StreamWatch:
    def __init__(self, child_id: str, url: str, *, frame_within_s: float, frozen_after_s: float,
                 frozen_diff: float, open_timeout_s: float) -> None:
        self.frame_within_s = frame_within_s
        self.frozen_after_s = frozen_after_s
        self.frozen_diff = frozen_diff
        self.source = FrameSource(url, name=f"child-{child_id}", queue_frames=4, realtime=True,
                                  backoff=Backoff(0.5, max(0.5, min(30.0, frame_within_s))),
                                  open_timeout_s=open_timeout_s)
        self._reference: np.ndarray | None = None
        self._last_frame: float | None = None
        self._same_since: float | None = None
        self._counted = (time.monotonic(), 0)

    def start(self) -> None:
        self.source.start()

    def stop(self) -> None:
        self.source.stop()

    def look(self) -> None:
        """Judge the frames decoded since the last look (non-blocking: the reader thread decodes)."""
        now = time.monotonic()
        for frame in self.source.take(0.0, TAKE_MAX):
            self._last_frame = now
            thumb = cv2.resize(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY), THUMB, interpolation=cv2.INTER_AREA)
            thumb = thumb.astype(np.int16)
            if self._reference is None or float(np.mean(np.abs(thumb - self._reference))) > self.frozen_diff:
                self._reference = thumb
                self._same_since = now

    def figures(self) -> StreamFigures:
        self.look()
        now = time.monotonic()
        since, count = self._counted
        frames = self.source.frames_read  # every frame decoded, the ones the queue dropped too
        fps = (frames - count) / (now - since) if now > since else 0.0
        self._counted = (now, frames)
        age = None if self._last_frame is None else now - self._last_frame
        same = 0.0 if self._same_since is None else now - self._same_since
        if age is None or age > self.frame_within_s:
            state = "no_frames"
        elif same >= self.frozen_after_s:
            state = "frozen"
        else:
            state = "live"
        return StreamFigures(state, age, same, self.source.width, self.source.height, fps, self.source.reconnects)
