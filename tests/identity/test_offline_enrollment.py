"""A board flashed offline enrolls itself at first boot: token in, credentials out, online."""

import json
from pathlib import Path
from typing import Any

import httpx

from provisioning.hostboard import EXIT_CONFIG, console_text, prepare_board, start_board, stop_board
from tests.support.fleet import fleet_in_thread, fleet_settings
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for, wait_for


async def _online(http: httpx.AsyncClient, device_id: str) -> dict[str, Any] | None:
    response = await http.get(f"/api/devices/{device_id}")
    body = response.json() if response.status_code == 200 else {}
    return body if body.get("online") and body.get("last_health") else None


async def test_offline_board_enrolls_itself_then_its_token_is_spent(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", secure=True)
    broker.start()
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", broker.admin_url, broker_accounts="dynsec")
    boards = []
    try:
        async with fleet_in_thread(settings) as http:
            issued = (await http.post("/api/enrollment-tokens", json={"kind": "esp32", "site": "Tan Binh"})).json()
            fleet_url = f"http://127.0.0.1:{settings.http_port}"
            board_dir = prepare_board(tmp_path / "esp", "esp-self-01", "127.0.0.1", broker.port,
                                      health_period_s=1, enrollment_token=issued["token"], fleet_url=fleet_url)
            boards.append(start_board(board_dir))
            device = await async_wait_for(lambda: _online(http, "esp-self-01"), timeout=30,
                                          what="self-enrolled board online")
            assert device["site"] == "Tan Binh" and device["kind"] == "esp32"
            config = json.loads((board_dir / "config.json").read_text())
            assert "enrollment_token" not in config and config["username"] == "esp-self-01" and config["password"]
            assert "enroll: enrolled as esp-self-01" in console_text(board_dir)
            assert issued["token"] not in console_text(board_dir) and config["password"] not in console_text(board_dir)

            # the same token on a second board: refused, one line, the board stops (exit 2)
            second_dir = prepare_board(tmp_path / "esp2", "esp-self-02", "127.0.0.1", broker.port,
                                       enrollment_token=issued["token"], fleet_url=fleet_url)
            second = start_board(second_dir)
            boards.append(second)
            assert wait_for(lambda: second.poll() is not None, timeout=30, what="second board gives up") is True
            assert second.returncode == EXIT_CONFIG
            assert "enroll: refused (410): this enrollment token has already been used" in console_text(second_dir)
            assert (await http.get("/api/devices/esp-self-02")).status_code == 404
    finally:
        for board in boards:
            stop_board(board)
        broker.kill()
