"""`camera`: motion events with one snapshot each, instead of video, from RTSP streams or files.

Per camera, three parts that never block the agent's event loop:
- a reader thread decodes frames into a bounded queue (`source.FrameSource`);
- a one-thread executor runs the pipeline (gate, events, snapshot) on batches of frames;
- the role's coroutine sends what the pipeline returns through the store-and-forward queue,
  so events made while the link is down wait in the queue like everything else.
With `[fleet] url` set, one more coroutine uploads the snapshot store to the fleet (upload.py).
"""

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edge.backoff import Backoff
from edge.commands import CommandHandler, Reply
from edge.errors import CommandError, ConfigError
from edge.roles.base import Number, Role, RoleContext
from edge.roles.camera.pipeline import CameraPipeline, MotionMessage
from edge.roles.camera.settings import CameraRoleSettings, CameraSettings
from edge.roles.camera.snapshots import SnapshotStore
from edge.roles.camera.source import FrameSource
from edge.roles.camera.upload import SnapshotUploader
from edge.vision.detector import DetectorLoadError, load_detector

WAIT_S = 0.2  # the worker's longest wait for a frame: how soon it notices a stop
BATCH = 32  # frames per hop to the worker thread


def state_dir_of(context: RoleContext) -> Path:
    """The agent's state folder (for the snapshot store)."""
    return context.state_dir


class Camera:
    """One camera's reader, pipeline and figures."""

    def __init__(self, settings: CameraSettings, store: SnapshotStore) -> None:
        self.settings = settings
        detector = None
        if settings.detector:
            try:
                detector = load_detector(settings.detector, settings.detector_options)
            except DetectorLoadError as err:
                raise ConfigError(f"roles.camera.cameras.{settings.id}.detector: {err}") from err
        self.pipeline = CameraPipeline(settings, store=store, detector=detector)
        self.source = self._new_source()
        self._fps_mark = (time.monotonic(), 0)
        self.fps = 0.0

    def _new_source(self) -> FrameSource:
        s = self.settings
        return FrameSource(
            s.url,
            name=s.id,
            queue_frames=s.frame_queue,
            realtime=s.realtime,
            loop=s.loop,
            backoff=Backoff(s.reconnect_min_s, max(s.reconnect_min_s, s.reconnect_max_s)),
            open_timeout_s=s.open_timeout_s,
        )

    def step(self) -> tuple[list[MotionMessage], bool]:
        """In the worker thread: process what the reader has; (messages, the source ended)."""
        messages: list[MotionMessage] = []
        frames = self.source.take(WAIT_S, BATCH)
        for frame in frames:
            messages.extend(self.pipeline.process(frame))
        if self.source.finished:
            last = frames[-1].t if frames else 0.0
            messages.extend(self.pipeline.close(last))
            return messages, True
        return messages, False

    def close(self) -> list[MotionMessage]:
        return self.pipeline.close(time.monotonic())

    def figures(self) -> dict[str, Number]:
        now, frames = time.monotonic(), self.pipeline.frames
        then, before = self._fps_mark
        if now - then >= 0.5:
            self.fps = round((frames - before) / (now - then), 1)
            self._fps_mark = (now, frames)
        p, src, tracker = self.pipeline, self.source, self.pipeline.tracker
        return {
            "fps": self.fps,
            "frames": p.frames,
            "dropped_frames": src.dropped,
            "read_errors": src.read_errors,
            "reconnects": src.reconnects,
            "motion_frames": p.motion_frames,
            "events": tracker.started,
            "rate_limited": tracker.rate_limited,
            "rejected": tracker.rejected,
            "recalibrations": p.gate.recalibrations,
            "snapshots": p.snapshots,
            "snapshot_errors": p.snapshot_errors,
            "gate_ms": round(1000 * p.gate_s / p.frames, 3) if p.frames else 0.0,
        }


class CameraRole(Role):
    def __init__(self, settings: CameraRoleSettings, context: RoleContext) -> None:
        super().__init__(context)
        self.settings = settings
        folder = settings.snapshot_dir or state_dir_of(context) / "snapshots"
        self.store = SnapshotStore(
            folder,
            ref_prefix=f"snap/{context.device_id}",
            max_bytes=int(settings.snapshot_max_mb * 1024 * 1024),
            max_files=settings.snapshot_max_files,
        )
        self.cameras = {c.id: Camera(c, self.store) for c in settings.cameras}
        self.events_sent = 0
        self.uploader = (SnapshotUploader(self.store, context.fleet, log=context.log)
                         if context.fleet is not None else None)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for camera in self.cameras.values():
                tasks.create_task(self._run_camera(camera), name=f"camera-{camera.settings.id}")
            if self.uploader is not None:  # runs on after a file ends: its snapshots still go up
                tasks.create_task(self.uploader.run(), name="camera-upload")

    async def _run_camera(self, camera: Camera) -> None:
        if camera.source.ended or camera.source.opens:  # run() again after a failure: a fresh reader
            camera.source = camera._new_source()
        loop = asyncio.get_running_loop()
        worker = ThreadPoolExecutor(1, thread_name_prefix=f"camera-gate-{camera.settings.id}")
        camera.source.start()
        try:
            while True:
                messages, ended = await loop.run_in_executor(worker, camera.step)
                self._send(messages)
                if ended:
                    self.context.log.info("%s: the file ended", camera.settings.id)
                    return
        finally:
            camera.source.stop()
            # Finish on the worker (it may still be inside `step`), then end the open events.
            closing = loop.run_in_executor(worker, camera.close)
            try:
                self._send(await asyncio.shield(closing))
            finally:
                worker.shutdown(wait=False)

    def _send(self, messages: list[MotionMessage]) -> None:
        for m in messages:
            self.context.event(
                event_id=m.event_id,
                event_type=m.event_type,
                phase=m.phase,
                category=m.category,
                data=m.data,
                snapshot=m.snapshot,
            )
            self.events_sent += 1

    def health(self) -> dict[str, Number]:
        per_camera = {cid: camera.figures() for cid, camera in self.cameras.items()}
        totals: dict[str, Number] = {}
        for figures in per_camera.values():
            for key, value in figures.items():
                if key != "gate_ms":
                    totals[key] = totals.get(key, 0) + value
        totals["messages"] = self.events_sent
        totals["snapshots_kept"] = len(self.store)
        if self.uploader is not None:
            totals.update(self.uploader.figures())
        if len(per_camera) > 1:
            for cid, figures in per_camera.items():
                for key in ("fps", "dropped_frames", "read_errors"):
                    totals[f"{cid}.{key}"] = figures[key]
        else:
            totals["gate_ms"] = next(iter(per_camera.values()))["gate_ms"]
        return totals

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"recalibrate": self._recalibrate}

    async def _recalibrate(self, args: Mapping[str, Any]) -> Reply:
        """`camera.recalibrate {"camera": id}` (all cameras without it): forget the background."""
        wanted = args.get("camera")
        if wanted is not None and wanted not in self.cameras:
            raise CommandError(f"no camera {wanted!r} (known: {', '.join(self.cameras)})")
        chosen = [wanted] if wanted is not None else list(self.cameras)
        for cid in chosen:
            self.cameras[cid].pipeline.recalibrate()
        return Reply({"recalibrated": chosen})
