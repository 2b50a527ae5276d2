"""`speaker`: a loudspeaker on a Pi. Runs the broadcast schedule of its desired state (online or
not, with the ESP32 speaker node's semantics: `speaker_schedule.py`), plays clips from a checked
cache (`speaker_cache.py`) through a real player process, lets emergencies pre-empt, and reports
every broadcast as an event `playback` (category `other`):

- `start` `{"status": "started"}`, then `end` with `completed`, or `failed` and a `reason`
  (`preempted` by an emergency, `player exit N: ...`, `stopped` when the agent stops);
- `once` `failed` for a broadcast that never started (`no clip`, `bad clip: ...`, `busy`,
  `missed`, `player: ...` when the player cannot be run).

The player is `player`, an argv template (`{file}`, `{volume}`), default `aplay -q {file}`; e.g.
`["mpv", "--no-video", "--really-quiet", "--volume={volume}", "{file}"]` or
`["ffplay", "-nodisp", "-autoexit", "-loglevel", "error", "-volume", "{volume}", "{file}"]`.
One broadcast plays at a time; up to `queue_max` wait (at the bound a new one fails `busy`);
an emergency pre-empts a non-emergency one and goes to the head of the queue.

Commands: `speaker.broadcast {"id", "clip", "emergency"?}` (now), `speaker.clip_fetch {"name",
"url", "sha256", "bytes"}`, `speaker.clip_delete {"name"}`, `speaker.stop` (ends the current one).
Clips listed in the desired state's `clips` are fetched in the background until the cache has them.

Files in `state_dir` (default: `speaker/` in the agent's state folder): `clips/` (the cache
and its `index.json`), `speaker.json` (the occurrence of each broadcast already handled, so a
restart neither repeats nor forgets one).
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import Field

from edge.commands import CommandHandler, Reply
from edge.errors import CommandError, DesiredStateError
from edge.roles.base import Number, Role, RoleContext, RoleSettings
from edge.roles.speaker_cache import ClipCache, ClipError, Entry, check_name
from edge.roles.speaker_schedule import (
    GRACE_MS,
    MISSED_MS,
    ScheduleError,
    check,
    is_emergency,
    next_time,
    occurrence,
)
from edge.stamps import wall_clock_ms
from edge.statefile import read_json, write_json

STOP_GRACE_S = 2.0  # a player that ignores SIGTERM this long is killed
SCAN_MAX_S = 1.0  # the schedule is looked at least this often (a clock set by NTP meanwhile)
FETCH_RETRY_S = (5.0, 300.0)  # background fetch of desired clips: first delay, cap


class Clock(Protocol):
    """Wall time for the schedule; tests give one they can move."""

    def now_ms(self) -> int | None: ...  # None while the clock is unset: nothing is scheduled

    async def sleep(self, seconds: float) -> None: ...  # may return early


class WallClock:
    def now_ms(self) -> int | None:
        return wall_clock_ms()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SpeakerSettings(RoleSettings):
    state_dir: Path | None = None  # default: `speaker/` in the agent's state folder
    budget_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    player: list[str] = Field(default_factory=lambda: ["aplay", "-q", "{file}"], min_length=1)
    queue_max: int = Field(default=4, ge=0, le=64)
    fetch_timeout_s: float = Field(default=25.0, gt=0, le=28)  # inside the 30 s command limit
    tz_min: int = Field(default=420, ge=-720, le=840)  # until the desired state says otherwise


@dataclass(slots=True)
class Broadcast:
    id: str
    clip: str
    event_id: str
    emergency: bool
    volume: int


@dataclass(slots=True)
class Playing:
    broadcast: Broadcast
    process: asyncio.subprocess.Process | None = None
    ended_by: str | None = None  # "preempted" / "stopped", set by whoever ends it
    ending: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class SpeakerRole(Role):
    def __init__(self, settings: SpeakerSettings, context: RoleContext, *, clock: Clock | None = None) -> None:
        super().__init__(context)
        self.settings = settings
        self.clock: Clock = clock or WallClock()
        folder = settings.state_dir or context.state_dir / "speaker"
        folder.mkdir(parents=True, exist_ok=True)
        self.cache = ClipCache(folder / "clips", settings.budget_bytes)
        self._state_path = folder / "speaker.json"
        saved = read_json(self._state_path, {}, if_corrupt={})
        self._done: dict[str, int] = dict(saved.get("done", {})) if isinstance(saved, dict) else {}
        self.schedule: list[Mapping[str, Any]] = []
        self.volume = 70
        self.tz_min = settings.tz_min
        self.wanted_clips: list[Mapping[str, Any]] = []
        self.queue: deque[Broadcast] = deque()
        self.current: Playing | None = None
        self._player_task: asyncio.Task[None] | None = None
        self._rescan = asyncio.Event()
        self._fetch_wanted = asyncio.Event()
        self.played = self.failed = self.preempted = self.player_failures = 0
        self.fetch_failures = 0
        # one download at a time (the desired state's clips in the background and clip_fetch
        # commands): two downloads of one clip would write the same `.part` file
        self._downloading = asyncio.Lock()

    # -- desired state ----------------------------------------------------------------------

    def check_desired(self, doc: Mapping[str, Any]) -> None:
        try:
            check(doc.get("speaker", {}))
        except ScheduleError as err:
            raise DesiredStateError(f"speaker: {err}") from err

    def apply_desired(self, doc: Mapping[str, Any]) -> None:
        part = doc.get("speaker", {})
        self.schedule = list(part.get("schedule", []))
        self.volume = part.get("volume", 70)
        self.tz_min = part.get("tz_min", self.settings.tz_min)
        self.wanted_clips = list(part.get("clips", []))
        known = {b["id"] for b in self.schedule}  # the fleet's ids are one per occurrence: forget the others
        self._done = {k: v for k, v in self._done.items() if k in known}
        self._rescan.set()
        self._fetch_wanted.set()

    # -- the schedule -----------------------------------------------------------------------

    async def run(self) -> None:
        fetcher = asyncio.create_task(self._fetch_loop(), name=f"speaker-fetch-{self.context.device_id}")
        try:
            while True:
                self._rescan.clear()
                wait = self.scan()
                sleeper = asyncio.create_task(self.clock.sleep(wait))
                rescan = asyncio.create_task(self._rescan.wait())
                try:
                    await asyncio.wait({sleeper, rescan}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    rescan.cancel()
        finally:
            fetcher.cancel()
            await self._stop_all("stopped")
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher

    def scan(self) -> float:
        """Start or report what is due now; seconds until the schedule needs a look again."""
        now = self.clock.now_ms()
        if now is None:
            return SCAN_MAX_S  # no clock, no schedule: nothing plays at a wrong time
        changed = False
        for b in self.schedule:
            occ = occurrence(b, now, self.tz_min)
            if occ is None or self._done.get(b["id"], -1) >= occ:
                continue
            broadcast = Broadcast(b["id"], b["clip"], f"{b['id']}@{occ}", is_emergency(b), b.get("volume", self.volume))
            late = now - occ
            if late < GRACE_MS:
                self.start(broadcast)
            elif late < MISSED_MS:
                self._report(broadcast, "once", "failed", "missed")
            self._done[b["id"]] = occ
            changed = True
        if changed:
            known = {b["id"] for b in self.schedule}
            write_json(self._state_path, {"done": {k: v for k, v in self._done.items() if k in known}})
        upcoming = next_time(self.schedule, now, self.tz_min)
        return SCAN_MAX_S if upcoming is None else max(0.0, min(SCAN_MAX_S, (upcoming - now) / 1000))

    # -- playing ----------------------------------------------------------------------------

    def start(self, broadcast: Broadcast) -> None:
        """Play now, pre-empt, queue, or refuse (busy)."""
        current = self.current
        if current is None:
            self._launch(broadcast)
        elif broadcast.emergency and not current.broadcast.emergency:
            self.queue.appendleft(broadcast)
            self._end_current("preempted")
        elif len(self.queue) >= self.settings.queue_max:
            self._report(broadcast, "once", "failed", "busy")
        else:
            self.queue.append(broadcast)

    def _launch(self, broadcast: Broadcast) -> None:
        self.current = Playing(broadcast)
        self._player_task = asyncio.create_task(self._play(self.current), name=f"speaker-play-{broadcast.event_id}")

    def _end_current(self, reason: str) -> None:
        current = self.current
        if current is None or current.ended_by is not None:
            return
        current.ended_by = reason
        current.ending.set()
        if current.process is not None and current.process.returncode is None:
            current.process.terminate()

    async def _play(self, playing: Playing) -> None:
        b = playing.broadcast
        try:
            try:
                path = self.cache.verified(b.clip)
            except ClipError as err:
                self._report(b, "once", "failed", str(err))
                return
            argv = [arg.format(file=path, volume=b.volume) for arg in self.settings.player]
            try:
                playing.process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
            except OSError as err:
                self.player_failures += 1
                self._report(b, "once", "failed", f"player: {err.strerror or err}")
                return
            self._report(b, "start", "started")
            if playing.ended_by is not None:  # pre-empted while the player was starting
                playing.process.terminate()
            stop_killer = asyncio.create_task(self._kill_if_stuck(playing))
            try:
                _, stderr = await playing.process.communicate()
            finally:
                stop_killer.cancel()
            code = playing.process.returncode
            if playing.ended_by is not None:
                self._report(b, "end", "failed", playing.ended_by)
            elif code == 0:
                self._report(b, "end", "completed")
            else:
                self.player_failures += 1
                tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                self._report(b, "end", "failed", f"player exit {code}: {tail[0]}"[:200])
        finally:
            playing.done.set()
            if self.current is playing:
                self.current = None
                if self.queue and playing.ended_by != "stopped":
                    self._launch(self.queue.popleft())

    async def _kill_if_stuck(self, playing: Playing) -> None:
        await playing.ending.wait()
        await asyncio.sleep(STOP_GRACE_S)
        if playing.process is not None and playing.process.returncode is None:
            playing.process.kill()

    async def _stop_all(self, reason: str) -> None:
        for b in self.queue:
            self._report(b, "once", "failed", reason)
        self.queue.clear()
        current = self.current
        if current is not None:
            self._end_current(reason)
            await current.done.wait()

    def _report(self, b: Broadcast, phase: str, status: str, reason: str | None = None) -> None:
        data: dict[str, Any] = {"broadcast": b.id, "clip": b.clip, "status": status}
        if reason is not None:
            data["reason"] = reason
            self.failed += 1
            self.preempted += reason == "preempted"
        elif status == "completed":
            self.played += 1
        self.context.event(event_id=b.event_id, event_type="playback", phase=phase, category="other", data=data)

    # -- clips ------------------------------------------------------------------------------

    async def fetch_clip(self, name: str, url: str, sha256: str, size: int) -> Mapping[str, Any]:
        """Download a clip into the cache, or answer at once when the cache holds it already (the
        background fetch of the desired state's `clips` often got it before the command came)."""
        try:
            async with asyncio.timeout(self.settings.fetch_timeout_s):
                entry = await self._fetch_one(name, url, sha256, size)
        except TimeoutError:
            self.fetch_failures += 1
            raise ClipError(f"download took longer than {self.settings.fetch_timeout_s} s") from None
        except ClipError:
            self.fetch_failures += 1
            raise
        return {"name": name, "bytes": entry.size, "sha256": entry.sha256}

    async def _fetch_one(self, name: str, url: str, sha256: str, size: int) -> Entry:
        async with self._downloading:
            held = self.cache.entries.get(name)
            if held is not None and self.cache.has(name, sha256):
                return held
            async with httpx.AsyncClient(timeout=self.settings.fetch_timeout_s) as client:
                return await self.cache.fetch(client, name, url, sha256, size)

    async def _fetch_loop(self) -> None:
        """Fetch the desired state's clips the cache lacks; retry failures with a growing delay."""
        delay = FETCH_RETRY_S[0]
        while True:
            await self._fetch_wanted.wait()
            self._fetch_wanted.clear()
            missing = [c for c in self.wanted_clips if not self.cache.has(c["name"], c["sha256"])]
            failed = False
            for c in missing:
                try:
                    await self.fetch_clip(c["name"], c["url"], c["sha256"], c["bytes"])
                except ClipError as err:
                    failed = True
                    self.context.log.warning("speaker: clip %s: %s", c["name"], err)
            if failed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._fetch_wanted.wait()
                delay = min(delay * 2, FETCH_RETRY_S[1])
                self._fetch_wanted.set()
            else:
                delay = FETCH_RETRY_S[0]

    # -- health and commands ----------------------------------------------------------------

    def health(self) -> dict[str, Number]:
        return {
            "played": self.played,
            "failed": self.failed,
            "preempted": self.preempted,
            "player_failures": self.player_failures,
            "queue": len(self.queue),
            "playing": int(self.current is not None),
            "clips": len(self.cache.entries),
            "cache_bytes": self.cache.used_bytes,
            "fetch_failures": self.fetch_failures,
            "checksum_failures": self.cache.checksum_failures,
            "evictions": self.cache.evictions,
        }

    def commands(self) -> Mapping[str, CommandHandler]:
        return {
            "broadcast": self._cmd_broadcast,
            "clip_fetch": self._cmd_clip_fetch,
            "clip_delete": self._cmd_clip_delete,
            "stop": self._cmd_stop,
        }

    async def _cmd_broadcast(self, args: Mapping[str, Any]) -> Reply:
        bid, clip = args.get("id"), args.get("clip")
        if not isinstance(bid, str) or not 0 < len(bid) <= 64 or not isinstance(clip, str):
            raise CommandError("needs id (1..64 characters) and clip")
        volume = args.get("volume", self.volume)
        if not isinstance(volume, int) or not 0 <= volume <= 100:
            raise CommandError("volume: 0..100")
        self.start(Broadcast(bid, clip, bid, is_emergency(args), volume))
        return Reply({"id": bid, "queued": len(self.queue)})

    async def _cmd_clip_fetch(self, args: Mapping[str, Any]) -> Reply:
        name, url, sha256, size = args.get("name"), args.get("url"), args.get("sha256"), args.get("bytes")
        if not (isinstance(url, str) and isinstance(sha256, str) and isinstance(size, int)):
            raise CommandError("needs name, url, sha256 and bytes")
        try:
            return Reply(await self.fetch_clip(check_name(name), url, sha256, size))
        except ClipError as err:
            raise CommandError(str(err)) from err

    async def _cmd_clip_delete(self, args: Mapping[str, Any]) -> Reply:
        name = args.get("name")
        if not isinstance(name, str) or not self.cache.delete(name):
            raise CommandError("no such clip")
        return Reply({"name": name})

    async def _cmd_stop(self, args: Mapping[str, Any]) -> Reply:
        current = self.current
        if current is None:
            return Reply({"stopped": None})
        self._end_current("stopped by command")
        return Reply({"stopped": current.broadcast.id})
