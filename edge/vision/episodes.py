"""From gate results over time to motion events: start, update, end, with a stable id.

One event at a time per zone (the zones of a camera, plus "outside every zone"), because the
city files what it extracts by purpose, and a zone carries a purpose. An event starts after
motion is seen in `start_frames` consecutive frames (a single noisy frame is not an event), ends
`end_after_s` after the last motion, and is cut at `max_duration_s` (the next motion starts a new
one). While it runs, the frame with the most motion so far is kept as the snapshot candidate; the
snapshot is taken `snapshot_after_s` into the event (or at its end, if sooner): one per event.

Starts are rate limited per camera by a token bucket (`rate_per_min`, `burst`); a motion burst
refused by it is counted once, not once per frame, and leaves no event behind.

Times are the frames' own times in seconds (media time for a file, monotonic time for a live
stream), so a file processed faster than real time gives the same events.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.vision.gate import Box, GateResult, Image

Confirm = Callable[[Image, Sequence[Box]], Sequence[Any] | None]


@dataclass(frozen=True, slots=True)
class EpisodeConfig:
    start_frames: int = 3
    end_after_s: float = 2.0
    update_every_s: float = 10.0
    snapshot_after_s: float = 1.0
    max_duration_s: float = 600.0
    rate_per_min: float = 6.0
    burst: int = 3


@dataclass(slots=True)
class Episode:
    """One motion event in the making."""

    number: int  # 1, 2, ... per tracker
    zone: int
    started_at: float
    last_motion_at: float
    boxes: list[Box]
    frames: int = 1
    union: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1 of everything seen
    peak_area: int = 0
    best_frame: Image | None = None
    best_boxes: list[Box] = field(default_factory=list)
    snapshot_taken: bool = False
    last_sent_at: float = 0.0
    labels: list[Any] = field(default_factory=list)  # what a detector stage saw at the start

    def add(self, t: float, boxes: list[Box], frame: Image) -> None:
        self.last_motion_at = t
        self.frames += 1
        self.boxes = boxes
        x0, y0, x1, y1 = self.union
        for b in boxes:
            x0, y0, x1, y1 = min(x0, b.x), min(y0, b.y), max(x1, b.x + b.w), max(y1, b.y + b.h)
        self.union = (x0, y0, x1, y1)
        area = sum(b.area for b in boxes)
        if area > self.peak_area:
            self.peak_area = area
            if not self.snapshot_taken:
                self.best_frame, self.best_boxes = frame, boxes


@dataclass(frozen=True, slots=True)
class Emission:
    """Something to send: `phase` of `episode`; `snapshot` asks the caller to store its best frame."""

    phase: str  # start, update, end
    episode: Episode
    at: float
    snapshot: bool = False


class EpisodeTracker:
    def __init__(self, config: EpisodeConfig | None = None, *, zones: int = 0, confirm: Confirm | None = None) -> None:
        self.config = config or EpisodeConfig()
        self._confirm = confirm
        self._open: dict[int, Episode] = {}
        self._run: dict[int, int] = {}  # zone -> consecutive frames with motion, before a start
        self._blocked: set[int] = set()  # zones whose current burst was refused
        self._tokens = float(self.config.burst)
        self._tokens_at: float | None = None
        self.started = 0
        self.rate_limited = 0
        self.rejected = 0  # refused by the detector stage
        self.zone_count = zones

    @property
    def open_episodes(self) -> list[Episode]:
        return list(self._open.values())

    def update(self, t: float, result: GateResult, frame: Image) -> list[Emission]:
        out: list[Emission] = []
        if not result.settling:
            by_zone: dict[int, list[Box]] = {}
            for box in result.boxes:
                by_zone.setdefault(box.zone, []).append(box)
            for zone in set(self._run) | set(self._open) | set(by_zone) | self._blocked:
                boxes = by_zone.get(zone)
                if boxes:
                    self._motion(t, zone, boxes, frame, out)
                else:
                    self._run.pop(zone, None)
                    self._blocked.discard(zone)
        self._tick(t, out)
        return out

    def close(self, t: float) -> list[Emission]:
        """End every open event (the source ended, the role stops)."""
        out = [self._end(t, episode) for episode in list(self._open.values())]
        self._open.clear()
        return out

    def _motion(self, t: float, zone: int, boxes: list[Box], frame: Image, out: list[Emission]) -> None:
        episode = self._open.get(zone)
        if episode is not None:
            episode.add(t, boxes, frame)
            return
        if zone in self._blocked:
            return
        run = self._run.get(zone, 0) + 1
        self._run[zone] = run
        if run < self.config.start_frames:
            return
        del self._run[zone]
        if not self._take_token(t):
            self.rate_limited += 1
            self._blocked.add(zone)
            return
        labels: list[Any] = []
        if self._confirm is not None:
            found = self._confirm(frame, boxes)
            if not found:
                self.rejected += 1
                self._blocked.add(zone)
                return
            labels = list(found)
        self.started += 1
        episode = Episode(self.started, zone, t, t, boxes, frames=0, union=(2**31, 2**31, 0, 0),
                          labels=labels, last_sent_at=t)
        episode.add(t, boxes, frame)
        self._open[zone] = episode
        out.append(Emission("start", episode, t))

    def _tick(self, t: float, out: list[Emission]) -> None:
        c = self.config
        for zone, episode in list(self._open.items()):
            if t - episode.last_motion_at >= c.end_after_s or t - episode.started_at >= c.max_duration_s:
                del self._open[zone]
                out.append(self._end(t, episode))
            elif not episode.snapshot_taken and t - episode.started_at >= c.snapshot_after_s:
                episode.snapshot_taken = True
                episode.last_sent_at = t
                out.append(Emission("update", episode, t, snapshot=True))
            elif t - episode.last_sent_at >= c.update_every_s:
                episode.last_sent_at = t
                out.append(Emission("update", episode, t))

    def _end(self, t: float, episode: Episode) -> Emission:
        snapshot = not episode.snapshot_taken
        episode.snapshot_taken = True
        return Emission("end", episode, t, snapshot=snapshot)

    def _take_token(self, t: float) -> bool:
        c = self.config
        if self._tokens_at is not None:
            self._tokens = min(float(c.burst), self._tokens + (t - self._tokens_at) * c.rate_per_min / 60.0)
        self._tokens_at = t
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
