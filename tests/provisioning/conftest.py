"""Provisioning under test: virtual boards on real ptys, the real CLI in a subprocess, the real fleet."""

import asyncio
import contextlib
import os
import select
import subprocess
import sys
import threading
import tty
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from provisioning.virtual_board import VirtualBoard
from tests.support.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
# How long the tool waits for one answer from a board in these tests (the default is 5 s):
# short, so the "board stopped answering" paths do not make the suite slow.
ANSWER_TIMEOUT = "8"  # generous: a loaded CI machine starts the virtual board slowly
# Boards that must run the firmware until it is online. The firmware's own tests hold it to its
# 64 KB budget (tests/firmware); these test the provisioning path, so they give it some room.
FIRMWARE_HEAP = "64k"


@dataclass
class Run:
    code: int
    out: str
    err: str


def provision_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISION_")}
    env.update(extra)
    return env


def run_provision(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
    """The real CLI, as the technician runs it (a process of its own)."""
    proc = subprocess.run([sys.executable, "-m", "provisioning.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env or provision_env(), timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


async def arun_provision(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
    """The same from an async test, so the fleet in this event loop keeps serving meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "provisioning.cli", *args, cwd=ROOT, env=env or provision_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def vboard(tmp_path: Path) -> Iterator[VirtualBoard]:
    """An empty virtual board (no firmware yet) on a pty linked at tmp_path/ttyESP0."""
    with VirtualBoard(tmp_path / "board", link=tmp_path / "ttyESP0") as board:
        yield board


@pytest.fixture
def firmware_board(tmp_path: Path) -> Iterator[VirtualBoard]:
    """A virtual board that will run the firmware it is flashed with, until it is online."""
    with VirtualBoard(tmp_path / "board", link=tmp_path / "ttyESP0", heapsize=FIRMWARE_HEAP) as board:
        yield board


@pytest.fixture
def junk_port(tmp_path: Path) -> Iterator[str]:
    """A serial port whose other end answers everything with noise: not a MicroPython board."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "ttyJUNK"
    link.symlink_to(os.ttyname(slave))
    stop = threading.Event()

    def babble() -> None:
        while not stop.is_set():
            try:
                readable, _, _ = select.select([master], [], [], 0.1)
                if readable and os.read(master, 1024):
                    os.write(master, b"\x00\xffAT+OK?\r\nERROR\r\n#$%")
            except OSError:
                return

    thread = threading.Thread(target=babble, name="junk-port", daemon=True)
    thread.start()
    yield str(link)
    stop.set()
    thread.join(5)
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


@dataclass
class FleetUnderTest:
    url: str
    http: httpx.AsyncClient  # logged in as an admin
    technician_token: str
    mosquitto: Mosquitto


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[FleetUnderTest]:
    from fleet.auth.roles import Role
    from tests.support.fleet import fleet_settings, running_fleet, token_for

    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url)
    async with running_fleet(settings) as http:
        token = await token_for(http, Role.TECHNICIAN)
        yield FleetUnderTest(str(http.base_url).rstrip("/"), http, token, mosquitto)
