"""The real device programs with the credentials the fleet issued, against Mosquitto that enforces them."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from provisioning.hostboard import prepare_board, start_board, stop_board
from tests.support.fleet import fleet_in_thread, fleet_settings
from tests.support.mosquitto import Mosquitto
from tests.support.tls import make_tls
from tests.support.wait import async_wait_for


async def _online(http: httpx.AsyncClient, device_id: str) -> dict[str, Any] | None:
    response = await http.get(f"/api/devices/{device_id}")
    body = response.json() if response.status_code == 200 else {}
    return body if body.get("online") and body.get("last_health") else None


async def test_edge_agent_over_tls_and_firmware_log_in_with_issued_credentials(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "mosquitto", secure=True, tls=tls)
    broker.start()
    assert broker.tls_port is not None
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", broker.admin_url, broker_accounts="dynsec")
    agent = board = None
    try:
        async with fleet_in_thread(settings) as http:
            credentials = {}
            for device_id, kind in (("pi-cred-01", "pi"), ("esp-cred-01", "esp32")):
                assert (await http.post("/api/devices", json={"id": device_id, "kind": kind})).status_code == 201
                credentials[device_id] = (await http.post(f"/api/devices/{device_id}/credentials")).json()["mqtt"]
            pi = credentials["pi-cred-01"]
            config = tmp_path / "agent.toml"
            config.write_text(f'device_id = "pi-cred-01"\nstate_dir = "{tmp_path / "pi-state"}"\n'
                              "health_period_s = 1\n[broker]\n"
                              f'url = "mqtts://127.0.0.1:{broker.tls_port}"\nca_file = "{tls.ca}"\n'
                              f'username = "{pi["username"]}"\n[roles.sim]\nperiod_s = 0.5\n')
            env = {**os.environ, "EDGE_BROKER__PASSWORD": pi["password"]}  # never in the file
            with (tmp_path / "agent.log").open("ab") as log:
                agent = subprocess.Popen([sys.executable, "-m", "edge.cli", "--config", str(config)],  # noqa: ASYNC220
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
            esp = credentials["esp-cred-01"]
            board_dir = prepare_board(tmp_path / "esp", "esp-cred-01", "127.0.0.1", broker.port,
                                      health_period_s=1, username=esp["username"], password=esp["password"])
            board = start_board(board_dir)
            await async_wait_for(lambda: _online(http, "pi-cred-01"), timeout=30, what="Pi over TLS")
            await async_wait_for(lambda: _online(http, "esp-cred-01"), timeout=30, what="ESP32 with its password")
            assert pi["password"] not in (tmp_path / "agent.log").read_text()
            assert pi["password"] not in config.read_text()
    finally:
        if agent is not None:
            agent.kill()
            agent.wait(10)
        if board is not None:
            stop_board(board)
        broker.kill()
