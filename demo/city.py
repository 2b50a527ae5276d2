"""`ioc-demo`: the city in small, on one machine, with one command.

The fleet service with its embedded broker and SQLite, and the city's devices, each in a ward
(demo/devices.py): ESP32 street lights running a sunset/sunrise program for Đồng Xoài and an
ESP32 loudspeaker (the real firmware on the MicroPython unix port), and Pi agents (real
`edge-agent` processes, configs from edge/launch.py): a loudspeaker, an air-quality node reading
SDS011 frames over a pseudo-terminal, an intersection camera on a looping street clip, a market
wifi hotspot following hostapd's log. The demo plays their world (demo/feeds.py) and the IOC
operator's part (demo/operator.py: the chime into the fleet's audio library, a broadcast of it to
the loudspeakers now and then), and adds a page, `/city`, with the evidence of each device's job
(demo/page.py).

Ctrl-C stops the operator, then the devices (each sends its shutdown death; anything a device
left running is killed with its process group), then their feeds, then the fleet, which stores
what it has received before it exits. Ctrl-C during start-up stops at once what has started.

What a person can get wrong is one line, never a traceback (`DemoError`): another demo running
in the same folder (its lock file), a port taken (checked before anything starts), each naming
the port and the setting that changes it. A tool or package a device needs and this machine
lacks is one line too, and the demo runs without that device.
"""

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import uvicorn

from demo import devices as town
from demo.clips import make_chime
from demo.devices import CityDevice, PiSetup
from demo.feeds import Sds011Line, feed_air, feed_lamps, replay_hostapd
from demo.operator import announce
from demo.page import install as install_page
from edge.agent import EXIT_RESTART
from edge.config import write_config
from edge.errors import ConfigError
from edge.launch import agent_argv
from fleet.app import create_app, fleet_services
from fleet.auth.people import create_user
from fleet.auth.roles import Role
from fleet.broker import BrokerError
from fleet.runtime import Runtime
from fleet.settings import Settings
from provisioning.hostboard import EXIT_CRASH, EXIT_REBOOT, prepare_board, start_board, stop_board

log = logging.getLogger(__name__)

WARDS = ["tan-phu", "tan-binh", "tan-xuan", "tan-thien", "tan-dong", "tien-thanh", "tan-thanh", "tien-hung"]
STOP_TIMEOUT_S = 10.0
DEMO_ADMIN = "admin"
LOCK_FILE = "demo.lock"  # held by the running demo: {"pid", "http_port", "broker_port"}
EXIT_INTERRUPTED = 130
WATCH_S = 2.0  # how often the demo looks whether a device process has exited
RESTARTS_MAX = 10  # per device; beyond, an exited device stays down (and the demo says so)


class DemoError(Exception):
    """Something the person running the demo can fix: one line, no traceback."""

    exit_code = 1


class DemoInterrupted(DemoError):
    exit_code = EXIT_INTERRUPTED


@dataclass(frozen=True)
class DemoOptions:
    kinds: frozenset[str] = frozenset(town.KINDS)
    pis: int = 0  # extra `sim` Pi agents
    boards: int = 0  # extra `sim` ESP32 boards
    announce_every_s: float = 60.0  # a broadcast to the loudspeakers this often
    hotspot_every_s: float = 3.0  # a hostapd log line this often


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the demo decides the order of shutdown."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


def _say(line: str) -> None:
    print(f"ioc-demo: {line}", file=sys.stderr, flush=True)


@dataclass
class _Running:
    """What the demo started, so that it can stop all of it in order."""

    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    boards: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starters: dict[str, Callable[[], subprocess.Popen[bytes]]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    minders: list["asyncio.Task[None]"] = field(default_factory=list)  # the operator, the watch: stopped first
    feeds: list["asyncio.Task[None]"] = field(default_factory=list)  # the devices' world
    lines: list[Sds011Line] = field(default_factory=list)

    def run(self, device: CityDevice, start: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.starters[device.id] = start
        (self.boards if device.board else self.agents)[device.id] = start()

    def task(self, group: list["asyncio.Task[None]"], work: Coroutine[Any, Any, None], name: str) -> None:
        group.append(asyncio.create_task(work, name=name))

    async def watch(self) -> None:
        """Start a device again after a `reboot` (or, for a board, a crash: an ESP32 resets);
        say once when one stopped for good."""
        while True:
            await asyncio.sleep(WATCH_S)
            for running, again in ((self.agents, {EXIT_RESTART}), (self.boards, {EXIT_REBOOT, EXIT_CRASH})):
                for device_id, proc in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    _kill_group(proc)
                    if code in again and self.restarts.get(device_id, 0) < RESTARTS_MAX:
                        self.restarts[device_id] = self.restarts.get(device_id, 0) + 1
                        running[device_id] = self.starters[device_id]()
                    else:
                        del running[device_id]
                        _say(f"{device_id} stopped (exit {code}); its log is in the demo's folder")

    async def stop(self) -> None:
        await _cancel(self.minders)
        await asyncio.to_thread(self._stop_processes)
        await _cancel(self.feeds)
        for line in self.lines:
            line.close()

    def _stop_processes(self) -> None:
        for proc in [*self.agents.values(), *self.boards.values()]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.agents.values():
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for proc in self.boards.values():
            stop_board(proc, STOP_TIMEOUT_S)
        for proc in [*self.agents.values(), *self.boards.values()]:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """What a device process left behind (a player, a watchdog shell): each device runs in its
    own session, so its process group is everything it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _cancel(tasks: list["asyncio.Task[None]"]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _agent_process(config_path: Path, password: str, log_path: Path) -> Callable[[], subprocess.Popen[bytes]]:
    def start() -> subprocess.Popen[bytes]:
        env = {**os.environ, "EDGE_BROKER__PASSWORD": password}  # as a systemd EnvironmentFile would
        with log_path.open("ab") as out:
            # its own session: the terminal's Ctrl-C reaches the demo, which stops the agents in order
            return subprocess.Popen(agent_argv(config_path), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    return start


def _board_process(board: Path, heapsize: str) -> Callable[[], subprocess.Popen[bytes]]:
    return lambda: start_board(board, heapsize, new_session=True)


async def _register(http: httpx.AsyncClient, device: CityDevice) -> str:
    """Register the device (if new) and issue its MQTT password."""
    response = await http.post("/api/devices", json={
        "id": device.id, "kind": device.kind, "name": device.name, "ward": device.ward,
        "site": "Đồng Xoài", "tags": ["demo", device.role], **town.place_of(device)})
    if response.status_code not in (201, 409):  # 409: registered by an earlier demo run
        raise RuntimeError(f"could not register {device.id}: {response.text}")
    issued = await http.post(f"/api/devices/{device.id}/credentials")
    issued.raise_for_status()
    doc = town.desired_doc(device)
    if doc is not None:  # retained by the broker: the device gets it when it subscribes
        (await http.put(f"/api/devices/{device.id}/desired", json={"doc": doc})).raise_for_status()
    return str(issued.json()["mqtt"]["password"])


async def _demo_admin(http: httpx.AsyncClient, workdir: Path) -> str:
    """The demo's admin: a random password, written only to a 0600 file in the demo folder."""
    secret_file = workdir / "admin-password.txt"
    if not secret_file.exists():
        password = secrets.token_urlsafe(18)
        await create_user(DEMO_ADMIN, password, Role.ADMIN, "Demo administrator")
        secret_file.touch(mode=0o600)
        secret_file.write_text(password + "\n")
    password = secret_file.read_text().strip()
    response = await http.post("/api/auth/login", json={"username": DEMO_ADMIN, "password": password})
    response.raise_for_status()
    return str(response.json()["token"])


async def _run(options: DemoOptions, port: int | None, workdir: Path) -> None:
    """The demo; Ctrl-C during start-up cancels it (what started is stopped), afterwards stops it."""
    stop = asyncio.Event()
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def on_signal() -> None:
        if started.is_set():
            stop.set()
        elif not stop.is_set():  # once: a second Ctrl-C must not cut the clean-up short
            stop.set()
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    workdir = await asyncio.to_thread(_prepare_workdir, workdir)
    settings = Settings(database_url=f"sqlite://{workdir / 'fleet.sqlite3'}", mqtt_url=None,
                        mqtt_client_id="fleet-demo", ward_outlines=town.WARD_OUTLINES)
    if port is not None:  # else FLEET_HTTP_PORT, or 8000
        settings.http_port = port
    # the audio library in the demo's folder; the speakers download their clips from this fleet
    # over plain http (the ESP32 fetches http:// only), whatever FLEET_PUBLIC_URL says elsewhere
    settings.audio_dir = workdir / "audio"
    settings.public_url = f"http://{settings.http_host}:{settings.http_port}"
    with _workdir_lock(workdir, settings):
        _check_ports(settings)
        running = _Running()
        try:
            await _serve(settings, options, workdir, running, started, stop)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            raise DemoInterrupted(f"interrupted during start-up; stopped what had started "
                                  f"({len(running.agents)} Pi agents, {len(running.boards)} boards)") from None


async def _serve(settings: Settings, options: DemoOptions, workdir: Path, running: _Running,
                 started: asyncio.Event, stop: asyncio.Event) -> None:
    port = settings.http_port
    chosen = town.city(set(options.kinds), options.pis, options.boards, WARDS)
    async with fleet_services(settings) as runtime:
        app = create_app(settings, services=lambda _settings: contextlib.nullcontext(runtime))
        clip = await asyncio.to_thread(make_chime, workdir / "clips")
        install_page(app)
        server = _QuietServer(uvicorn.Config(app, host=settings.http_host, port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve(), name="demo-http")
        try:
            while not server.started:
                if serving.done():
                    raise DemoError(_port_taken([(port, "the status page", "FLEET_HTTP_PORT")]))
                await asyncio.sleep(0.05)
            base = f"http://{settings.http_host}:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                http.headers["Authorization"] = f"Bearer {await _demo_admin(http, workdir)}"
                present = await _start_city(http, runtime, chosen, workdir, options, running)
                running.task(running.minders, running.watch(), "demo-watch")
                started.set()
                _ready(base, runtime, workdir, present)
                speakers = [device.id for device in present if device.role == "speaker"]
                if speakers:
                    running.task(running.minders, announce(http, speakers, clip, options.announce_every_s),
                                 "demo-announce")
                await stop.wait()
                print("ioc-demo: stopping devices, then the fleet", flush=True)
        finally:
            await running.stop()
            server.should_exit = True
            with contextlib.suppress(SystemExit):  # uvicorn exits 3 when it could not listen
                await serving


async def _start_city(http: httpx.AsyncClient, runtime: Runtime, chosen: list[CityDevice], workdir: Path,
                      options: DemoOptions, running: _Running) -> list[CityDevice]:
    """Register and start the devices this machine can run; the ones it cannot, in one line each."""
    present: list[CityDevice] = []
    lacking: dict[str, list[str]] = {}
    for device in chosen:
        reason = town.missing(device)
        if reason is None:
            present.append(device)
        else:
            lacking.setdefault(reason, []).append(device.id)
    for reason, ids in lacking.items():
        _say(f"{reason}: starting without {', '.join(ids)}")
    started: list[CityDevice] = []
    for device in (d for d in present if not d.board):
        if await _start_pi(http, device, runtime.broker_url, workdir, options, running):
            started.append(device)
    boards = [d for d in present if d.board]
    passwords = {device.id: await _register(http, device) for device in boards}
    # compiling the firmware takes a second or two a board: off the loop (so Ctrl-C is heard), side by side
    prepared = await asyncio.gather(*(asyncio.to_thread(
        prepare_board, workdir / d.id, d.id, runtime.broker_host, runtime.broker_port, username=d.id,
        password=passwords[d.id], **town.board_config(d)) for d in boards))
    for device, board in zip(boards, prepared, strict=True):
        running.run(device, _board_process(board, town.HEAP[device.role]))
        started.append(device)
    lamps = [board for device, board in zip(boards, prepared, strict=True) if device.role == "light"]
    if lamps:
        running.task(running.feeds, feed_lamps(lamps), "demo-lamp-current")
    return [d for d in chosen if d in started]


async def _start_pi(http: httpx.AsyncClient, device: CityDevice, broker_url: str, workdir: Path,
                    options: DemoOptions, running: _Running) -> bool:
    """Its config first (a role this installation cannot run: one line, and it is not registered),
    then its registration and credentials, then the agent and the world it senses."""
    state = workdir / device.id
    setup = PiSetup()
    line: Sds011Line | None = None
    if device.role == "sensor":
        line = Sds011Line()
        running.lines.append(line)  # closed at the end, whatever happens meanwhile
        setup = PiSetup(sensor_port=line.port)
    elif device.role == "hotspot":
        setup = PiSetup(hotspot_log=state / "hostapd.log")
    elif device.role == "camera":
        # it uploads each snapshot to the fleet (docs/relay.md), which shows it on /city and /live
        setup = PiSetup(snapshot_dir=state / "snapshots", fleet_url=str(http.base_url).rstrip("/"))
    try:
        # validating a role's table imports the role (OpenCV for the camera): off the loop
        config = await asyncio.to_thread(town.pi_config, device, broker_url, state, setup)
    except ConfigError as err:
        _say(f"{device.id}: {err}; starting without it")
        return False
    password = await _register(http, device)
    state.mkdir(exist_ok=True)
    path = await asyncio.to_thread(write_config, config, workdir / f"{device.id}.toml")
    if line is not None:
        running.task(running.feeds, feed_air(line), "demo-sds011")
    if setup.hotspot_log is not None:
        setup.hotspot_log.touch()  # the agent follows it from its end: the lines appended after it opened it
        running.task(running.feeds, replay_hostapd(setup.hotspot_log, period_s=options.hotspot_every_s),
                     "demo-hostapd-log")
    running.run(device, _agent_process(path, password, workdir / f"{device.id}.log"))
    return True


def _ready(base: str, runtime: Runtime, workdir: Path, present: list[CityDevice]) -> None:
    kinds = ", ".join(f"{sum(d.role == role for d in present)} {role}" for role in
                      dict.fromkeys(d.role for d in present))
    print(f"ioc-demo: status page {base}/ and the city {base}/city (user {DEMO_ADMIN}, password in "
          f"{workdir / 'admin-password.txt'})  ·  API {base}/docs  ·  broker {runtime.broker_url}  ·  "
          f"{len(present)} devices ({kinds or 'none'})  ·  logs in {workdir}/  ·  Ctrl-C stops",
          flush=True)
    print(f"ioc-demo: to add a person to this demo's database: FLEET_DATABASE_URL=sqlite://"
          f"{workdir / 'fleet.sqlite3'} {Path(sys.executable).with_name('fleet')} user-add NAME "
          "--role ops", flush=True)


@contextlib.contextmanager
def _workdir_lock(workdir: Path, settings: Settings) -> Iterator[None]:
    """One demo per folder (they would share its database and its devices' ids)."""
    path = workdir / LOCK_FILE
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise DemoError(_already_running(lock, workdir, settings)) from None
        lock.seek(0)
        lock.truncate()
        lock.write(json.dumps({"pid": os.getpid(), "http_port": settings.http_port,
                               "broker_port": settings.embedded_broker_port}))
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)


def _already_running(lock: IO[str], workdir: Path, settings: Settings) -> str:
    lock.seek(0)
    try:
        other = json.loads(lock.read())
    except ValueError:
        other = {}
    ports = [(int(other.get("http_port", settings.http_port)), "FLEET_HTTP_PORT"),
             (int(other.get("broker_port", settings.embedded_broker_port)), "FLEET_EMBEDDED_BROKER_PORT")]
    pid = f" (pid {other['pid']})" if "pid" in other else ""
    again = _settings_to_try([(port, name) for port, name in ports])
    return (f"another demo{pid} is running in {workdir} (status page port {ports[0][0]}, broker port "
            f"{ports[1][0]}); stop it (Ctrl-C in its terminal), or start a second one elsewhere: "
            f"FLEET_DEMO_DIR={workdir}-2 {again} make demo")


def _check_ports(settings: Settings) -> None:
    taken = [(port, what, name) for port, what, name in (
        (settings.http_port, "the status page", "FLEET_HTTP_PORT"),
        (settings.embedded_broker_port, "the embedded MQTT broker", "FLEET_EMBEDDED_BROKER_PORT"))
        if not _port_free(settings.http_host if name == "FLEET_HTTP_PORT" else settings.embedded_broker_host, port)]
    if taken:
        raise DemoError(_port_taken(taken))


def _port_taken(taken: list[tuple[int, str, str]]) -> str:
    which = " and ".join(f"port {port} ({what})" for port, what, _ in taken)
    again = _settings_to_try([(port, name) for port, _, name in taken])
    verb = "are" if len(taken) > 1 else "is"
    return f"{which} {verb} in use (another demo, or another program); choose another: {again} make demo"


def _port_free(host: str, port: int) -> bool:
    """Whether a server could listen there now (as asyncio's does: SO_REUSEADDR, so a closed
    connection's TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _settings_to_try(ports: list[tuple[int, str]]) -> str:
    """`NAME=PORT ...` with, for each port, one above it that is free now (each a different one)."""
    chosen: list[str] = []
    taken: set[int] = {port for port, _ in ports}
    for port, name in ports:
        candidate = next((p for p in range(port + 1, min(port + 21, 65536))
                          if p not in taken and _port_free("127.0.0.1", p)), port + 1)
        taken.add(candidate)
        chosen.append(f"{name}={candidate}")
    return " ".join(chosen)


def _prepare_workdir(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir.resolve()  # agent configs resolve relative paths against their own folder


def run_demo(options: DemoOptions, port: int | None, workdir: str) -> int:
    try:
        asyncio.run(_run(options, port, Path(workdir)))
    except DemoError as err:
        print(f"ioc-demo: {err}", file=sys.stderr)
        return err.exit_code
    except BrokerError as err:
        print(f"ioc-demo: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the demo's own handling of Ctrl-C was in place
        print("ioc-demo: interrupted during start-up; nothing had started", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
