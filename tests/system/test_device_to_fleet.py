"""The whole loop with real processes: edge-agent and MicroPython firmware → Mosquitto → fleet."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.models import Command
from provisioning.hostboard import prepare_board, start_board, stop_board
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with running_fleet(fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url)) as http:
        yield http


def _agent(tmp_path: Path, device_id: str, port: int) -> subprocess.Popen[bytes]:
    config = tmp_path / f"{device_id}.toml"
    config.write_text(f'device_id = "{device_id}"\nstate_dir = "{tmp_path / device_id}"\n'
                      f'health_period_s = 1\n[broker]\nurl = "mqtt://127.0.0.1:{port}"\nkeepalive_s = 5\n'
                      "[roles.sim]\nperiod_s = 0.5\n")
    log = (tmp_path / f"{device_id}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "edge.cli", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)


async def _device(http: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/devices/{device_id}")
    return response.json() if response.status_code == 200 else {}


async def _online_with_health(http: httpx.AsyncClient, device_id: str) -> dict[str, Any] | None:
    device = await _device(http, device_id)
    return device if device.get("online") and device.get("last_health") else None


async def test_real_devices_come_online_answer_commands_and_go_offline_when_killed(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, tmp_path: Path) -> None:
    agent = _agent(tmp_path, "pi-e2e-01", mosquitto.port)
    board_dir = prepare_board(tmp_path / "esp-e2e-01", "esp-e2e-01", "127.0.0.1", mosquitto.port,
                              health_period_s=1, keepalive_s=5)
    board = start_board(board_dir)
    try:
        pi = await async_wait_for(lambda: _online_with_health(fleet, "pi-e2e-01"), timeout=30, what="Pi online")
        esp = await async_wait_for(lambda: _online_with_health(fleet, "esp-e2e-01"), timeout=30,
                                   what="ESP32 online")
        assert pi["kind"] == "pi" and "cpu_pct" in pi["last_health"]
        assert esp["kind"] == "esp32" and "heap_free" in esp["last_health"] and "rssi" in esp["last_health"]

        for device_id in ("pi-e2e-01", "esp-e2e-01"):
            sent = (await fleet.post(f"/api/devices/{device_id}/commands", json={"name": "ping"})).json()

            async def answered(device_id: str = device_id, command_id: str = sent["id"]) -> dict[str, Any] | None:
                row = (await fleet.get(f"/api/devices/{device_id}/commands/{command_id}")).json()
                return row if row["status"] != "sent" else None

            result = await async_wait_for(answered, timeout=20, what=f"{device_id} answers ping")
            assert result["status"] == "ok"

        telemetry = (await fleet.get("/api/devices/pi-e2e-01/telemetry")).json()
        assert telemetry and telemetry[0]["role"] == "sim"

        for proc, device_id in ((agent, "pi-e2e-01"), (board, "esp-e2e-01")):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

            async def lost(device_id: str = device_id) -> dict[str, Any] | None:
                device = await _device(fleet, device_id)
                return device if device.get("online") is False else None

            gone = await async_wait_for(lost, timeout=20, what=f"{device_id} offline after kill -9")
            assert gone["last_death_reason"] == "lost"
        gaps = (await fleet.get("/api/devices/pi-e2e-01/gaps")).json()
        assert gaps == []
    finally:
        if agent.poll() is None:
            agent.kill()
        stop_board(board)


async def test_a_board_without_a_clock_takes_the_fleets_time(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, tmp_path: Path) -> None:
    board_dir = prepare_board(tmp_path / "esp-noclock", "esp-noclock", "127.0.0.1", mosquitto.port,
                              health_period_s=1)
    (board_dir / "clock.json").write_text(  # the host HAL's clock: not set, as on a board without NTP
        '{"unix_ms": null, "real_ms": 0, "rate": 1}')
    board = start_board(board_dir)
    try:
        async def clocked_health() -> list[dict[str, Any]] | None:
            response = await fleet.get("/api/devices/esp-noclock/health")
            rows = response.json() if response.status_code == 200 else []
            return rows if any(r["device_ts"] is not None for r in rows) else None

        rows = await async_wait_for(clocked_health, timeout=30, what="health stamped with the fleet's time")
        birth = (await fleet.get("/api/devices/esp-noclock")).json()
        assert birth["online"] is True
        stamped = [r["device_ts"] for r in rows if r["device_ts"] is not None]
        assert abs(stamped[0] - time.time() * 1000) < 120_000
        assert any(r["device_ts"] is None for r in rows)  # it began without a clock ...
        answered = await Command.filter(device_id="esp-noclock", name="set_time", status="ok").count()
        assert answered == 1  # ... and took the fleet's
    finally:
        stop_board(board)
