"""Every alert rule kind fires and clears on real device processes (issue 13, docs/ops.md "Alert
rules"): the real fleet (uvicorn on a free port; its ops worker's turns driven by the test with the
time it chooses), a real Mosquitto with per-device accounts, and

- an ESP32 board: the firmware on the MicroPython unix port (-X heapsize=96k, an ESP32 without
  PSRAM), roles `light` and `sensor`; its pins are the host HAL's files (lamp current, the DHT22's
  temperature), its clock the HAL's clock file, its watchdog the HAL's own (a `.hang` file stops
  the main loop), its heap the interpreter's;
- a Pi agent (`edge-agent` process) with roles `camera` (RTSP from an ffmpeg process on loopback),
  `speaker` and `sim`, its state folder on a 16 MiB tmpfs, run in a mount namespace of its own
  where the kernel's files it reads its health from (the thermal zone, /proc/meminfo) are files
  the test writes: a Pi's SoC temperature and memory cannot be made to rise here, and those files
  are the lowest boundary there is.

Each condition is brought about on the device and taken away again; the alert must be raised by the
rule engine, and then resolved by it (not by a person). Rules with a window (at least 60 s by their
parameters' bounds) are resolved by a turn at a time after the window: the device stays as it is,
only the window passes. The rules are made through POST /api/ops/rules with short parameters; the
alerts are read through GET /api/ops/alerts.
"""

import asyncio
import contextlib
import functools
import os
import pty
import signal
import subprocess
import time
import tty
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edge.config import write_config
from edge.launch import agent_argv, agent_config
from fleet.ops.rules import KINDS
from provisioning.hostboard import EXIT_CRASH, EXIT_REBOOT, stop_board
from tests.edge.roles.camera_fixtures import write_clip
from tests.edge.roles.rtsp_server import RtspServer
from tests.edge.small_disk import small_disk
from tests.firmware.ota_support import Keeper
from tests.firmware.support import HostBoard
from tests.fleet.test_children import CHILD_RULES
from tests.support.fleet import enroll, fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

WARD = "tan-xuan"
HEAP = "96k"  # light and sensor on one board: about an ESP32's heap without PSRAM
LIVE = {"open", "acknowledged"}
WAIT_S = 45  # for one condition to reach the fleet and its alert
WINDOW_S = 60  # the shortest window a rule takes
SILENT_AFTER_PERIODS = 30  # a wide stale band: quiet for 2 to 30 health periods is stale, not yet silent


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Site:
    """The fleet (as admin), its broker, and the rules this test made, by kind."""

    http: httpx.AsyncClient
    broker: Mosquitto
    tmp: Path
    rules: dict[str, int] = field(default_factory=dict)

    async def turn(self, at: datetime | None = None) -> None:
        """One turn of the ops worker (alert rules first) at `at` (default: now)."""
        await self.http.app.state.runtime.ops.turn(at or now())  # type: ignore[attr-defined]

    async def rule(self, kind: str, **params: Any) -> int:
        made = await self.http.post("/api/ops/rules", json={
            "name": f"e2e {kind}", "kind": kind, "severity": "major", "params": params})
        assert made.status_code == 201, made.text
        self.rules[kind] = int(made.json()["id"])
        return self.rules[kind]

    async def alert(self, kind: str, device_id: str) -> dict[str, Any] | None:
        """This test's rule's alert on the device (one per rule and device: a re-raise reuses it)."""
        got = await self.http.get("/api/ops/alerts", params={"device": device_id, "kind": kind, "limit": 500})
        assert got.status_code == 200, got.text
        mine = [a for a in got.json()["items"] if a["rule_id"] == self.rules[kind]]
        return mine[0] if mine else None

    async def raised(self, kinds: list[str], device_id: str, within: float = WAIT_S) -> dict[str, dict[str, Any]]:
        """Turn the engine until each kind's alert is live on the device; the alerts."""
        async def live() -> dict[str, dict[str, Any]] | None:
            await self.turn()
            found = {k: await self.alert(k, device_id) for k in kinds}
            if all(a is not None and a["state"] in LIVE for a in found.values()):
                return {k: a for k, a in found.items() if a is not None}
            return None

        try:
            alerts = await async_wait_for(live, timeout=within, interval=0.2, what=f"{kinds} raised on {device_id}")
        except TimeoutError as err:
            found = {k: await self.alert(k, device_id) for k in kinds}
            raise AssertionError(f"{err}; the alerts: {found}; the device: {await self.device(device_id)}") from None
        assert alerts is not None
        for kind, alert in alerts.items():
            print(f"raised {kind} on {device_id}: {alert['summary']}")
        return alerts

    async def resolved(self, kinds: list[str], device_id: str, within: float = WAIT_S,
                       at: datetime | None = None) -> None:
        """Turn the engine (at `at`, or now) until each kind's alert is resolved by the engine; each
        alert's history is raised (or re-raised), then resolved."""
        last: dict[str, Any] = {}

        async def cleared() -> bool:
            await self.turn(at)
            last.update({k: await self.alert(k, device_id) for k in kinds})
            return all(a and a["state"] == "resolved" for a in last.values())

        try:
            await async_wait_for(cleared, timeout=within, interval=0.2, what=f"{kinds} resolved on {device_id}")
        except TimeoutError as err:
            raise AssertionError(f"{err}; the alerts: {last}") from None
        for kind in kinds:
            alert = await self.alert(kind, device_id)
            assert alert is not None and alert["resolved_by"] is None, alert  # the engine, not a person
            detail = (await self.http.get(f"/api/ops/alerts/{alert['id']}")).json()
            actions = [e["action"] for e in detail["events"]]
            assert actions[0] == "raised" and actions[-1] == "resolved", (kind, actions)

    async def quiet(self, kinds: list[str], device_id: str) -> None:
        """A turn now raises none of these: the condition is not (yet) there."""
        await self.turn()
        for kind in kinds:
            alert = await self.alert(kind, device_id)
            assert alert is None or alert["state"] == "resolved", alert

    async def device(self, device_id: str) -> dict[str, Any]:
        got = await self.http.get(f"/api/devices/{device_id}")
        assert got.status_code == 200, got.text
        return dict(got.json())

    async def until_device(self, device_id: str, check: Callable[[dict[str, Any]], bool], what: str,
                           within: float = WAIT_S) -> dict[str, Any]:
        async def seen() -> dict[str, Any] | None:
            body = await self.device(device_id)
            return body if check(body) else None

        body = await async_wait_for(seen, timeout=within, interval=0.2, what=f"{device_id}: {what}")
        assert body is not None
        return body

    async def desired(self, device_id: str, doc: dict[str, Any]) -> None:
        """PUT the desired state; wait until the device reports it applied."""
        put = await self.http.put(f"/api/devices/{device_id}/desired", json={"doc": doc})
        assert put.status_code == 200, put.text
        version = put.json()["version"]
        await self.until_device(device_id, lambda d: d["reported_version"] == version
                                and d["reported_status"] == "applied", f"desired version {version} applied")

    async def command(self, device_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send a command through the API; its record once the device answered."""
        sent = await self.http.post(f"/api/devices/{device_id}/commands", json={"name": name, "args": args})
        assert sent.status_code == 202, sent.text
        command_id = sent.json()["id"]

        async def answered() -> dict[str, Any] | None:
            got = (await self.http.get(f"/api/devices/{device_id}/commands/{command_id}")).json()
            return got if got.get("answered_at") else None

        command = await async_wait_for(answered, timeout=WAIT_S, interval=0.2, what=f"{name} answered")
        assert command is not None
        return command

    async def events(self, device_id: str, event_type: str) -> list[dict[str, Any]]:
        got = await self.http.get(f"/api/devices/{device_id}/events", params={"limit": 1000})
        assert got.status_code == 200, got.text
        return [e for e in got.json() if e["type"] == event_type]

    def dynsec(self, *args: str) -> None:
        """A dynamic-security command to the broker, as its administrator."""
        subprocess.run(["mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(self.broker.port), "-u", self.broker.admin[0],
                        "-P", self.broker.admin[1], "dynsec", *args], check=True, capture_output=True)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    broker = Mosquitto(tmp_path / "mosquitto", secure=True)
    broker.start()
    # the worker's own turns far apart: the test turns it, at the times it chooses
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", broker.admin_url, broker_accounts="dynsec",
                              ops_tick_s=300, silent_after_periods=SILENT_AFTER_PERIODS, presence_sweep_s=1)
    try:
        async with running_fleet(settings) as http:
            http.app.state.runtime.ops.tick_s = 3600  # type: ignore[attr-defined]
            yield Site(http, broker, tmp_path)
    finally:
        broker.kill()


# -- the ESP32 board ---------------------------------------------------------------------------

BOARD_RULES: dict[str, dict[str, Any]] = {
    "day_burning": {}, "lamp_failure": {}, "sensor_alarm": {}, "clock_drift": {"max_ms": 20_000},
    "offline": {"for_s": 1}, "crash_loop": {"boots": 4, "window_s": WINDOW_S}, "safe_mode": {},
}  # heap_low: made once the board's own heap is known
BOOT_GOOD_S = 20  # a boot that ran this long is good: longer than a hang takes to end in the watchdog
LAMP = {"default": 100}  # no rule: the default level, all day
SENSOR = {"median": 1, "alarms": {"temp_c": {"hi": 40, "hyst": 2}}}
# a program the board holds in its heap: 8 rules of 12 steps (~3 KB of JSON) cost ~15 KB parsed
HEAVY = {"default": 100, "rules": [
    {"days": [day % 7], "steps": [{"at": f"{(day + 2 * step) % 24:02d}:{(7 * step) % 60:02d}", "level": 100}
                                  for step in range(12)]} for day in range(8)]}


def noon_here() -> tuple[float, int]:
    """A longitude (and its time zone, in minutes) where the sun stands about highest now, so the
    light role judges the sun up for hours whenever the test runs."""
    utc_h = (time.time() % 86_400) / 3600
    lon = ((12 - utc_h) * 15 + 180) % 360 - 180
    return round(lon, 3), round(lon * 4)


def rebooted(session: int, device: dict[str, Any]) -> bool:
    """Online in a session after `session`, with a health report of it."""
    return bool(device["session"] != session and device["state"] == "online" and device["last_health_at"]
                and device["last_health_at"] > device["last_birth_at"])


@contextlib.contextmanager
def uart() -> Iterator[str]:
    """The SDS011's serial port: a pty nothing writes to (the dust sensor is connected, and quiet)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


async def test_board_rules_fire_and_clear_on_a_real_esp32(site: Site) -> None:
    """day_burning, lamp_failure, sensor_alarm, heap_low, clock_drift, offline, crash_loop, safe_mode."""
    device_id = f"esp-al-{uuid.uuid4().hex[:6]}"
    creds = await enroll(site.http, device_id, "esp32", WARD)
    for kind, params in BOARD_RULES.items():
        await site.rule(kind, **params)
    lon, tz_min = noon_here()
    with uart() as port:
        board = HostBoard(site.tmp / device_id, device_id, site.broker.port, roles=["light", "sensor"],
                          username=device_id, password=creds["password"], sds011_port=port, lat=0.0, lon=lon,
                          tz_min=tz_min, telemetry_period_s=5, wdt_s=2, boot_good_s=BOOT_GOOD_S, safe_retry_s=8)
        board.set_io("current_ma", 300)  # the lamp draws current
        board.set_io("th", "30.0 60.0")  # 30 °C, 60 % RH
        keeper: Keeper | None = None
        try:
            board.start(HEAP)
            await site.until_device(device_id, lambda d: d["state"] == "online" and d["last_health"], "online")
            await site.desired(device_id, {"light": LAMP, "sensor": SENSOR})

            # -- the lamp burns by day (no program step turns it off) ------------------------------
            await site.raised(["day_burning"], device_id)
            assert [e["phase"] for e in await site.events(device_id, "day_burning")] == ["start"]

            # -- a heavy program in the heap, a hot sensor, a clock two minutes fast: all at once ---
            await asyncio.sleep(3)  # a few health reports with the small program
            heap_free = int((await site.device(device_id))["last_health"]["heap_free"])
            await site.rule("heap_low", min_bytes=heap_free - 6000)
            await site.quiet(["heap_low", "sensor_alarm", "clock_drift"], device_id)
            # (documents without "sensor" from here: the sensor role applies its part again whenever a
            # document has one, and an alarm open at that moment then never ends)
            await site.desired(device_id, {"light": HEAVY})
            board.set_io("th", "45.0 60.0")
            board.set_clock(int(time.time() * 1000) + 120_000)
            await site.raised(["heap_low", "sensor_alarm", "clock_drift"], device_id)
            low = (await site.device(device_id))["last_health"]["heap_free"]
            assert low < heap_free - 6000, (low, heap_free)
            # ... and all taken away: a small program, a cool sensor, the clock set right
            await site.desired(device_id, {"light": LAMP})
            board.set_io("th", "30.0 60.0")
            board.set_clock(int(time.time() * 1000))
            await site.resolved(["heap_low", "sensor_alarm", "clock_drift"], device_id)
            assert sorted(e["phase"] for e in await site.events(device_id, "alarm")) == ["end", "start"]

            # -- the lamp fails: no current while it should burn; then an override turns it off -----
            board.set_io("current_ma", 0)
            await site.resolved(["day_burning"], device_id)
            await site.raised(["lamp_failure"], device_id)
            answer = await site.command(device_id, "light.override",
                                        {"level": 0, "until": int(time.time() * 1000) + 600_000})
            assert answer["status"] == "ok", answer
            await site.resolved(["lamp_failure"], device_id)

            # -- offline: the board dies without a word (the broker's will), then comes back --------
            await site.quiet(["offline", "crash_loop"], device_id)
            board.kill()
            await site.raised(["offline"], device_id)
            assert (await site.device(device_id))["state_reason"] == "lost"
            board.start(HEAP)
            await site.resolved(["offline"], device_id)

            # -- a crash loop: each boot's main loop hangs after its birth, the watchdog resets it;
            #    after 3 failed boots the board comes up in safe mode, and after safe_retry_s it
            #    tries its firmware again, which (the hang gone) runs: safe mode ends -----------------
            await site.quiet(["crash_loop", "safe_mode"], device_id)
            hang = board.path / ".hang"
            keeper = Keeper(board, HEAP, restart_on=(EXIT_REBOOT, EXIT_CRASH, -signal.SIGKILL),
                            before_restart=lambda code: hang.unlink(missing_ok=True))
            for _ in range(4):
                before = await site.device(device_id)
                if (before["last_health"] or {}).get("mode") == "safe":
                    break
                hang.touch()
                await site.until_device(device_id, functools.partial(rebooted, before["session"]),
                                        "a new boot with its health")
            await site.raised(["crash_loop", "safe_mode"], device_id)
            assert (await site.device(device_id))["last_health"].get("mode") == "safe"
            await site.resolved(["safe_mode"], device_id, within=60)
            assert [e["phase"] for e in await site.events(device_id, "safe_mode")][-1] == "start"
            # the window passes without a birth: the loop is over
            await site.resolved(["crash_loop"], device_id, at=now() + timedelta(seconds=WINDOW_S + 1))
        finally:
            if keeper is not None:
                keeper.stop()
            board.kill()
            print("esp32 console, last lines:\n" + "\n".join(board.console().splitlines()[-25:]))


# -- the Pi agent ------------------------------------------------------------------------------

PI_RULES: dict[str, dict[str, Any]] = {
    "temp_high": {"max_c": 80.0}, "mem_high": {"max_pct": 90.0}, "disk_high": {"max_pct": 80.0},
    "camera_fps_low": {"min_fps": 5.0}, "camera_stalled": {},
    "speaker_playback_failed": {"failures": 2, "window_s": WINDOW_S},
    "queue_growing": {"max_queue": 10, "window_s": WINDOW_S}, "dropped_rising": {"window_s": WINDOW_S},
    "ingest_gaps": {"missing": 1, "window_s": WINDOW_S},
    "stale": {}, "flapping": {"changes": 4, "window_s": WINDOW_S},
}
QUEUE_MAX = 40  # the Pi's store-and-forward queue (messages); beyond, the oldest are dropped
UPLINK_BYTES_S = 800  # the congested uplink: less than the agent sends (~2.5 KB/s with sim at 10 Hz)
MEM_TOTAL_KB = 4_000_000
# The agent in a mount namespace of its own where the thermal zones and /proc/meminfo are the test's
# files (bind mounts); `exec` keeps the agent's pid the one the test holds (signals reach it).
KERNEL_FILES = 'mount --bind "$1" /sys/class/thermal && mount --bind "$2" /proc/meminfo && shift 2 && exec "$@"'


@dataclass
class KernelFiles:
    """What a Pi's health is read from, as the agent's namespace shows it: written in place (a bind
    mount follows the file, not its name)."""

    thermal: Path  # bound over /sys/class/thermal
    meminfo: Path  # bound over /proc/meminfo

    def set(self, temp_c: float, mem_used_pct: float) -> None:
        (self.thermal / "thermal_zone0").mkdir(parents=True, exist_ok=True)
        (self.thermal / "thermal_zone0" / "temp").write_text(f"{round(temp_c * 1000)}\n")
        available = round(MEM_TOTAL_KB * (100 - mem_used_pct) / 100)
        self.meminfo.write_text(f"MemTotal:       {MEM_TOTAL_KB} kB\nMemFree:        {available} kB\n"
                                f"MemAvailable:   {available} kB\n")


def fill_to(folder: Path, pct: float) -> None:
    """Write a file in `folder` until its file system is `pct` used (as `df` counts)."""
    usage = os.statvfs(folder)
    used = (usage.f_blocks - usage.f_bfree) * usage.f_frsize
    total = used + usage.f_bavail * usage.f_frsize
    with (folder / "filler").open("ab") as filler:
        filler.write(bytes(max(0, int(total * pct / 100) - used)))


class SlowUplink:
    """The Pi's way to its broker: a TCP relay whose device-to-broker direction can be held to
    `rate` bytes a second (a congested cellular uplink); None: as fast as loopback. The
    broker-to-device direction is never slowed."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.rate: float | None = None
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, device: asyncio.StreamReader, to_device: asyncio.StreamWriter) -> None:
        broker, to_broker = await asyncio.open_connection("127.0.0.1", self.broker_port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, slowed: bool) -> None:
            try:
                while data := await source.read(64 if slowed and self.rate else 65536):
                    sink.write(data)
                    await sink.drain()
                    if slowed and self.rate:
                        await asyncio.sleep(len(data) / self.rate)
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(device, to_broker, True), pump(broker, to_device, False))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


def solid_clip(path: Path, fps: float) -> Path:
    """Two seconds of a plain grey picture at `fps` (H.264): frames without motion, only a rate."""
    frames = (np.full((120, 160, 3), 110, np.uint8) for _ in range(int(2 * fps)))
    return write_clip(frames, path, fps=fps, gop=max(1, int(fps)))


@dataclass
class Pi:
    """An agent process, started again as often as the test needs, on the same config and state."""

    device_id: str
    folder: Path
    config: Path
    password: str
    kernel: KernelFiles
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", KERNEL_FILES, "pi-kernel",
                str(self.kernel.thermal), str(self.kernel.meminfo), *agent_argv(self.config, log_level="info")]
        env = {**os.environ, "EDGE_BROKER__PASSWORD": self.password}
        with (self.folder / "agent.log").open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env)

    def stop(self) -> None:
        if self.proc is not None:
            stop_board(self.proc, 15)  # SIGINT: the agent stops cleanly (its death: shutdown)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def log(self) -> str:
        path = self.folder / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""


def camera_fps(device: dict[str, Any]) -> float:
    return float(((device["last_health"] or {}).get("roles") or {}).get("camera", {}).get("fps", -1))


async def test_pi_rules_fire_and_clear_on_a_real_pi_agent(site: Site) -> None:
    """temp_high, mem_high, disk_high, camera_fps_low, camera_stalled, speaker_playback_failed,
    queue_growing, dropped_rising, ingest_gaps, stale, flapping."""
    device_id = f"pi-al-{uuid.uuid4().hex[:6]}"
    creds = await enroll(site.http, device_id, "pi", WARD)
    for kind, params in PI_RULES.items():
        await site.rule(kind, **params)
    folder = site.tmp / device_id
    folder.mkdir()
    kernel = KernelFiles(folder / "thermal", folder / "meminfo")
    kernel.set(temp_c=52.0, mem_used_pct=40.0)
    smooth, slow = solid_clip(folder / "smooth.mp4", 10), solid_clip(folder / "slow.mp4", 2)
    camera = RtspServer(smooth, folder)
    camera.start()
    uplink = SlowUplink(site.broker.port)
    await uplink.start()
    with small_disk(folder / "state") as state:
        config = agent_config(
            device_id, f"mqtt://127.0.0.1:{uplink.port}", state, {
                "camera": {"cameras": [{"id": "cam1", "url": camera.url, "reconnect_min_s": 0.1,
                                        "reconnect_max_s": 0.5, "open_timeout_s": 5}],
                           "snapshot_dir": str(folder / "snapshots")},
                "speaker": {},
                "sim": {"period_s": 0.1},
            }, health_period_s=1,
            broker={"url": f"mqtt://127.0.0.1:{uplink.port}", "username": device_id, "keepalive_s": 10,
                    "backoff_min_s": 0.2, "backoff_max_s": 1},
            queue={"max_messages": QUEUE_MAX})
        pi = Pi(device_id, folder, write_config(config, folder / "agent.toml"), creds["password"], kernel)
        try:
            pi.start()
            await site.until_device(device_id, lambda d: d["state"] == "online" and camera_fps(d) >= 5,
                                    "online, its camera at full rate", within=60)

            # -- hot, short of memory, disk nearly full: all at once, then all taken away ----------
            await site.quiet(["temp_high", "mem_high", "disk_high"], device_id)
            kernel.set(temp_c=85.0, mem_used_pct=95.0)
            fill_to(state, 90)
            alerts = await site.raised(["temp_high", "mem_high", "disk_high"], device_id)
            assert alerts["temp_high"]["value"]["temp_c"] == 85.0, alerts
            kernel.set(temp_c=52.0, mem_used_pct=40.0)
            (state / "filler").unlink()
            await site.resolved(["temp_high", "mem_high", "disk_high"], device_id)

            # -- the camera: a slow stream (2 fps), then none, then its full rate again ------------
            await asyncio.to_thread(camera.stop)
            camera.clip = slow
            await asyncio.to_thread(camera.start)
            await site.raised(["camera_fps_low"], device_id)
            await asyncio.to_thread(camera.stop)
            await site.raised(["camera_stalled"], device_id)
            await site.resolved(["camera_fps_low"], device_id)  # no frames at all: stalled, not slow
            camera.clip = smooth
            await asyncio.to_thread(camera.start)
            await site.resolved(["camera_stalled"], device_id)

            # -- the speaker fails two broadcasts (the clip is not in its cache) -------------------
            for n in range(2):
                answer = await site.command(device_id, "speaker.broadcast", {"id": f"b{n}", "clip": "c-missing"})
                assert answer["status"] == "ok", answer
            await site.raised(["speaker_playback_failed"], device_id)
            failed = await site.events(device_id, "playback")
            assert [(e["phase"], e["data"]["status"]) for e in failed] == [("once", "failed")] * 2, failed

            # -- a congested uplink: the queue grows, its oldest messages are dropped (gaps) -------
            await site.quiet(["queue_growing", "dropped_rising", "ingest_gaps"], device_id)
            uplink.rate = UPLINK_BYTES_S
            await site.raised(["queue_growing", "dropped_rising", "ingest_gaps"], device_id, within=90)
            uplink.rate = None  # the link clears: the queue drains
            await site.resolved(["queue_growing"], device_id)
            assert (await site.device(device_id))["open_gaps"] > 0

            # -- stale: the agent stops (SIGSTOP) with its connection up, then goes on -------------
            pi.signal(signal.SIGSTOP)
            try:
                await site.raised(["stale"], device_id)
            finally:
                pi.signal(signal.SIGCONT)
            await site.resolved(["stale"], device_id)

            # -- flapping: the agent restarts twice (offline, online, offline, online) ------------
            await site.quiet(["flapping"], device_id)
            for _ in range(2):
                before = await site.device(device_id)
                await asyncio.to_thread(pi.stop)
                pi.start()
                await site.until_device(device_id, functools.partial(rebooted, before["session"]), "back",
                                        within=60)
            await site.raised(["flapping"], device_id)

            # -- the windows pass with nothing new: the counted kinds clear -----------------------
            await site.resolved(["speaker_playback_failed", "dropped_rising", "ingest_gaps", "flapping"], device_id,
                                at=now() + timedelta(seconds=WINDOW_S + 1))
        finally:
            await asyncio.to_thread(pi.stop)
            await asyncio.to_thread(camera.stop)
            await uplink.close()
            print("pi agent log, last lines:\n" + "\n".join(pi.log().splitlines()[-25:]))


def test_every_rule_kind_is_driven_on_a_device_here() -> None:
    """A new rule kind needs its condition brought about on a device in this file (the child-device
    kinds: on a Pi agent watching RTSP streams, in tests/fleet/test_children.py)."""
    assert set(BOARD_RULES) | {"heap_low"} | set(PI_RULES) | CHILD_RULES == set(KINDS)
