"""Frames from a camera: a thread decodes (OpenCV) into a bounded queue; reconnects on failure.

Bound and policy: the queue holds `queue_frames` decoded frames. For a live stream (or a file
played in real time) a full queue drops its *oldest* frame, counted in `dropped`: the gate is
behind, and the newest frame is the one that matters. A file played as fast as possible waits
instead (nothing is lost; the gate sets the pace).

A stream that cannot be opened, or stops giving frames, is released and opened again after a
delay growing from `reconnect_min_s` to `reconnect_max_s` (with jitter); each failure is counted
in `read_errors`, each successful reopen in `reconnects`. A file without `loop` ends the source
at its end; with `loop` it starts again, its media time continuing.

Frame times: media time (frame index / fps) for a file, so a file gives the same events at any
speed; `time.monotonic()` at decode for a live stream.
"""

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import cv2

from edge.backoff import Backoff
from edge.vision.gate import Image

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0


@dataclass(frozen=True, slots=True)
class Frame:
    t: float  # seconds
    image: Image


def is_file(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


class FrameSource:
    def __init__(
        self,
        url: str,
        *,
        name: str = "camera",
        queue_frames: int = 4,
        realtime: bool = True,
        loop: bool = False,
        backoff: Backoff | None = None,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = url.removeprefix("file://") if url.startswith("file://") else url
        self.name = name
        self.file = is_file(url)
        self.realtime = realtime or not self.file
        self.loop = loop
        self._drop_oldest = self.realtime
        self._max = queue_frames
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._open_timeout_ms = int(open_timeout_s * 1000)
        self._frames: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_read = 0
        self.dropped = 0
        self.read_errors = 0
        self.reconnects = 0
        self.opens = 0
        self.ended = False
        self.width = 0
        self.height = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"camera-read-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the reader to stop; it releases the stream within one read (it is a daemon thread)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def take(self, timeout: float, max_frames: int = 32) -> list[Frame]:
        """Up to `max_frames` decoded frames, oldest first; [] after `timeout` or at the end."""
        with self._cond:
            if not self._frames and not self.ended:
                self._cond.wait(timeout)
            batch = [self._frames.popleft() for _ in range(min(max_frames, len(self._frames)))]
            self._cond.notify_all()
        return batch

    @property
    def finished(self) -> bool:
        """A file without loop has been read to its end and every frame taken."""
        return self.ended and not self._frames

    # -- the reader thread ------------------------------------------------------------------

    def _run(self) -> None:
        offset = 0.0  # media time of the current pass over a looping file
        while not self._stop.is_set():
            capture = self._open()
            if capture is None:
                self._failed("cannot open")
                continue
            try:
                count, fps = self._read(capture, offset)
            finally:
                capture.release()
            if self._stop.is_set():
                break
            if self.file and count > 0:
                if not self.loop:
                    with self._cond:
                        self.ended = True
                        self._cond.notify_all()
                    return
                offset += count / fps
                continue
            self._failed("stream stopped giving frames")

    def _open(self) -> cv2.VideoCapture | None:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._open_timeout_ms,
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._open_timeout_ms]
        capture = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            return None
        if self.opens:
            self.reconnects += 1
            log.info("%s: stream open again (%d reconnects)", self.name, self.reconnects)
        self.opens += 1
        return capture

    def _failed(self, why: str) -> None:
        self.read_errors += 1
        delay = self._backoff.next_delay()
        level = logging.WARNING if self.read_errors == 1 else logging.DEBUG
        log.log(level, "%s: %s; retrying in %.1f s (%d read errors)", self.name, why, delay, self.read_errors)
        self._stop.wait(delay)

    def _read(self, capture: cv2.VideoCapture, offset: float) -> tuple[int, float]:
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if 1.0 <= fps <= 1000.0 else DEFAULT_FPS
        started = time.monotonic()
        count = 0
        while not self._stop.is_set():
            ok, image = capture.read()
            if not ok or image is None:
                break
            if count == 0:
                self._backoff.reset()
                self.height, self.width = image.shape[:2]
            media_t = count / fps
            count += 1
            if self.file and self.realtime:
                ahead = started + media_t - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
            t = offset + media_t if self.file else time.monotonic()
            self._put(Frame(t, image))
        return count, fps

    def _put(self, frame: Frame) -> None:
        with self._cond:
            while len(self._frames) >= self._max:
                if self._drop_oldest:
                    self._frames.popleft()
                    self.dropped += 1
                elif self._stop.is_set():
                    return
                else:
                    self._cond.wait(0.5)
            self._frames.append(frame)
            self.frames_read += 1
            self._cond.notify_all()
