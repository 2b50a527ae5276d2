"""`ioc-demo`: the whole system on one machine with one command.

The fleet service with its embedded broker and SQLite, several edge agents with the `sim` role
(real `edge-agent` processes), and real MicroPython firmware processes, all on loopback. Ctrl-C
stops the devices first (each sends its shutdown death), then the fleet, which stores what it
has received before it exits. Ctrl-C during start-up stops at once what has started.

What a person can get wrong is one line, never a traceback (`DemoError`): another demo running
in the same folder (its lock file), a port taken (checked before anything starts), each naming
the port and the setting that changes it.
"""

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import uvicorn

from fleet.app import create_app, fleet_services
from fleet.auth.people import create_user
from fleet.auth.roles import Role
from fleet.broker import BrokerError
from fleet.settings import Settings
from provisioning.hostboard import prepare_board, start_board, stop_board

log = logging.getLogger(__name__)

WARDS = ["tan-phu", "tan-binh", "tan-xuan", "tan-thien", "tan-dong", "tien-thanh", "tan-thanh", "tien-hung"]
STOP_TIMEOUT_S = 10.0
DEMO_ADMIN = "admin"
LOCK_FILE = "demo.lock"  # held by the running demo: {"pid", "http_port", "broker_port"}
EXIT_INTERRUPTED = 130


class DemoError(Exception):
    """Something the person running the demo can fix: one line, no traceback."""

    exit_code = 1


class DemoInterrupted(DemoError):
    exit_code = EXIT_INTERRUPTED


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the demo decides the order of shutdown."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


@dataclass
class _Children:
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)
    boards: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.agents + self.boards:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.agents:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for proc in self.boards:
            stop_board(proc, STOP_TIMEOUT_S)


def _agent_config(path: Path, device_id: str, broker_url: str, state_dir: Path) -> Path:
    path.write_text(
        f'device_id = "{device_id}"\n'
        f'state_dir = "{state_dir}"\n'
        "health_period_s = 5\n"
        "shutdown_drain_s = 2.0\n"
        "[broker]\n"
        f'url = "{broker_url}"\n'
        f'username = "{device_id}"\n'
        "[roles.sim]\n"
        "period_s = 2.0\n"
    )
    return path


def _start_agent(config: Path, password: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGE_BROKER__PASSWORD": password}  # as a systemd EnvironmentFile would
    with log_path.open("ab") as out:
        # its own session: the terminal's Ctrl-C reaches the demo, which stops the agents in order
        return subprocess.Popen([sys.executable, "-m", "edge.cli", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


async def _register(http: httpx.AsyncClient, device_id: str, kind: str, index: int, name: str) -> str:
    """Register the device (if new) and issue its MQTT password."""
    response = await http.post("/api/devices", json={
        "id": device_id, "kind": kind, "name": name, "ward": WARDS[index % len(WARDS)],
        "site": "Đồng Xoài", "tags": ["demo"]})
    if response.status_code not in (201, 409):  # 409: registered by an earlier demo run
        raise RuntimeError(f"could not register {device_id}: {response.text}")
    issued = await http.post(f"/api/devices/{device_id}/credentials")
    issued.raise_for_status()
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


async def _run(pis: int, boards: int, port: int | None, workdir: Path) -> None:
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
                        mqtt_client_id="fleet-demo")
    if port is not None:  # else FLEET_HTTP_PORT, or 8000
        settings.http_port = port
    with _workdir_lock(workdir, settings):
        _check_ports(settings)
        children = _Children()
        try:
            await _serve(settings, pis, boards, workdir, children, started, stop)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            raise DemoInterrupted(f"interrupted during start-up; stopped what had started "
                                  f"({len(children.agents)} Pi agents, {len(children.boards)} boards)") from None


async def _serve(settings: Settings, pis: int, boards: int, workdir: Path, children: "_Children",
                 started: asyncio.Event, stop: asyncio.Event) -> None:
    port = settings.http_port
    async with fleet_services(settings) as runtime:
        app = create_app(settings, services=lambda _settings: contextlib.nullcontext(runtime))
        server = _QuietServer(uvicorn.Config(app, host=settings.http_host, port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve(), name="demo-http")
        try:
            while not server.started:
                if serving.done():
                    raise DemoError(_port_taken([(port, "the status page", "FLEET_HTTP_PORT")]))
                await asyncio.sleep(0.05)
            base = f"http://{settings.http_host}:{port}"
            broker_url = runtime.broker_url
            async with httpx.AsyncClient(base_url=base) as http:
                http.headers["Authorization"] = f"Bearer {await _demo_admin(http, workdir)}"
                for i in range(pis):
                    device_id = f"demo-pi-{i + 1:02d}"
                    password = await _register(http, device_id, "pi", i, f"Simulated Pi {i + 1}")
                    state = workdir / device_id
                    state.mkdir(exist_ok=True)
                    config = _agent_config(workdir / f"{device_id}.toml", device_id, broker_url, state)
                    children.agents.append(_start_agent(config, password, workdir / f"{device_id}.log"))
                if boards and shutil.which("micropython") is None and not _micropython_available():
                    print("ioc-demo: no micropython executable; starting no boards", file=sys.stderr)
                    boards = 0
                for i in range(boards):
                    device_id = f"demo-esp-{i + 1:02d}"
                    password = await _register(http, device_id, "esp32", pis + i, f"Simulated ESP32 {i + 1}")
                    # compiling the firmware takes a second or two: off the loop, so Ctrl-C is heard
                    board = await asyncio.to_thread(
                        prepare_board, workdir / device_id, device_id, runtime.broker_host, runtime.broker_port,
                        health_period_s=5, roles=["sim"], telemetry_period_s=5, username=device_id,
                        password=password)
                    children.boards.append(start_board(board, new_session=True))
            started.set()
            print(f"ioc-demo: status page {base}/ (user {DEMO_ADMIN}, password in "
                  f"{workdir / 'admin-password.txt'})  ·  API {base}/docs  ·  broker {broker_url}  ·  "
                  f"{pis} Pi agents, {boards} MicroPython boards  ·  logs in {workdir}/  ·  Ctrl-C stops",
                  flush=True)
            print(f"ioc-demo: to add a person to this demo's database: FLEET_DATABASE_URL=sqlite://"
                  f"{workdir / 'fleet.sqlite3'} {Path(sys.executable).with_name('fleet')} user-add NAME "
                  "--role ops", flush=True)
            await stop.wait()
            print("ioc-demo: stopping devices, then the fleet", flush=True)
        finally:
            await asyncio.to_thread(children.stop)
            server.should_exit = True
            with contextlib.suppress(SystemExit):  # uvicorn exits 3 when it could not listen
                await serving


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


def _micropython_available() -> bool:
    return Path(sys.executable).with_name("micropython").exists()


def run_demo(pis: int, boards: int, port: int | None, workdir: str) -> int:
    try:
        asyncio.run(_run(pis, boards, port, Path(workdir)))
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
