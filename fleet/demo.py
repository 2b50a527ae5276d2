"""`fleet demo`: the whole system on one machine with one command.

The fleet service with its embedded broker and SQLite, several edge agents with the `sim` role
(real `edge-agent` processes), and real MicroPython firmware processes, all on loopback. Ctrl-C
stops the devices first (each sends its shutdown death), then the fleet, which stores what it
has received before it exits.
"""

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

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


async def _run(pis: int, boards: int, port: int, workdir: Path) -> None:
    workdir = await asyncio.to_thread(_prepare_workdir, workdir)
    settings = Settings(database_url=f"sqlite://{workdir / 'fleet.sqlite3'}", mqtt_url=None,
                        http_port=port, mqtt_client_id="fleet-demo")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children = _Children()
    async with fleet_services(settings) as runtime:
        app = create_app(settings, services=lambda _settings: contextlib.nullcontext(runtime))
        server = _QuietServer(uvicorn.Config(app, host=settings.http_host, port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve(), name="demo-http")
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError(f"the status page could not listen on port {port}")
            await asyncio.sleep(0.05)
        base = f"http://{settings.http_host}:{port}"
        broker_url = runtime.broker_url
        try:
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
                    print("fleet demo: no micropython executable; starting no boards", file=sys.stderr)
                    boards = 0
                for i in range(boards):
                    device_id = f"demo-esp-{i + 1:02d}"
                    password = await _register(http, device_id, "esp32", pis + i, f"Simulated ESP32 {i + 1}")
                    board = prepare_board(workdir / device_id, device_id, runtime.broker_host,
                                          runtime.broker_port, health_period_s=5, roles=["sim"],
                                          telemetry_period_s=5, username=device_id, password=password)
                    children.boards.append(start_board(board, new_session=True))
            print(f"fleet demo: status page {base}/ (user {DEMO_ADMIN}, password in "
                  f"{workdir / 'admin-password.txt'})  ·  API {base}/docs  ·  broker {broker_url}  ·  "
                  f"{pis} Pi agents, {boards} MicroPython boards  ·  logs in {workdir}/  ·  Ctrl-C stops",
                  flush=True)
            await stop.wait()
            print("fleet demo: stopping devices, then the fleet", flush=True)
        finally:
            await asyncio.to_thread(children.stop)
            server.should_exit = True
            await serving


def _prepare_workdir(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir.resolve()  # agent configs resolve relative paths against their own folder


def _micropython_available() -> bool:
    return Path(sys.executable).with_name("micropython").exists()


def run_demo(pis: int, boards: int, port: int, workdir: str) -> int:
    try:
        asyncio.run(_run(pis, boards, port, Path(workdir)))
    except BrokerError as err:
        print(f"fleet demo: {err}", file=sys.stderr)
        return 1
    return 0
