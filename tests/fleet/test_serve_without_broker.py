"""`fleet serve` started while its broker is down (issue 9 §4): it used to exit 3 with a traceback.

A real `fleet serve` process, a real Mosquitto started only later: the API and the status page
answer meanwhile (the page with a banner), /healthz says the broker is unreachable (503), and
once the broker is up the ingest connects by itself and stores what devices send. Also with
Mosquitto's dynamic security (the production set-up), whose accounts the fleet sets up once the
broker answers.
"""

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto, free_port, wait_port
from tests.support.mqtt_client import Client
from tests.support.wait import wait_for

ADMIN = ("serve-admin", "serve admin password 0b7e")
DEADLINE_S = 60.0
STOPPED = (0, -signal.SIGTERM)  # uvicorn ends by the signal again once it has shut down cleanly


class Serve:
    """`python -m fleet.cli serve` in its own process, its output in a file."""

    def __init__(self, workdir: Path, mqtt_url: str, **env: str) -> None:
        self.port = free_port()
        self.log = workdir / "fleet.log"
        self.env = {**os.environ, "FLEET_DATABASE_URL": f"sqlite://{workdir / 'fleet.sqlite3'}",
                    "FLEET_MQTT_URL": mqtt_url, "FLEET_MQTT_CLIENT_ID": f"fleet-serve-{self.port}",
                    "FLEET_MQTT_PROBE_S": "0.5", "FLEET_PRESENCE_SWEEP_S": "0.2", **env}
        added = subprocess.run([sys.executable, "-m", "fleet.cli", "user-add", ADMIN[0], "--role", "admin",
                                "--password-stdin"], input=ADMIN[1] + "\n", env=self.env, text=True,
                               capture_output=True, timeout=60)
        assert added.returncode == 0, added.stderr
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "serve", "--port", str(self.port)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=15)

    def wait_serving(self) -> None:
        def serving() -> bool:
            assert self.proc.poll() is None, f"fleet serve exited {self.proc.returncode}: {self.log.read_text()}"
            try:
                return self.http.get("/healthz").status_code in (200, 503)
            except httpx.TransportError:
                return False

        wait_for(serving, timeout=DEADLINE_S, interval=0.1, what="fleet serve answering")

    def log_in(self) -> None:
        response = self.http.post("/api/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        response.raise_for_status()  # the session cookie for the page; the token for the API
        self.http.headers["Authorization"] = f"Bearer {response.json()['token']}"

    def health(self) -> tuple[int, dict[str, Any]]:
        response = self.http.get("/healthz")
        return response.status_code, response.json()

    def stop(self) -> int:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def broker_later(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    """A Mosquitto with its port and configuration chosen, not started: the test starts it."""
    broker = Mosquitto(tmp_path / "mosquitto", secure=getattr(request, "param", False))
    yield broker
    broker.kill()


def _page(serve: Serve, path: str = "/") -> str:
    response = serve.http.get(path, headers={"Authorization": ""})  # the browser's way: the cookie only
    assert response.status_code == 200, response.status_code
    return response.text


def _started_without_the_broker(serve: Serve, broker: Mosquitto) -> None:
    serve.wait_serving()
    status, report = serve.health()
    assert status == 503 and report["mqtt_connected"] is False
    assert any("not connected to the MQTT broker at mqtt://" in p and f":{broker.port}" in p and "unreachable" in p
               and "Connection refused" in p for p in report["problems"]), report["problems"]
    serve.log_in()
    assert serve.http.get("/api/devices").status_code == 200
    page = _page(serve)
    assert 'id="broker-banner"' in page and "not connected to the MQTT broker" in page


def _connects_once_the_broker_is_up(serve: Serve, broker: Mosquitto) -> None:
    broker.start()
    wait_for(lambda: serve.health()[0] == 200, timeout=DEADLINE_S, interval=0.2, what="/healthz 200")
    # the banner goes once the fleet's probe has come back (with dynamic security, the fleet's
    # role set-up makes the broker drop and take back the fleet's connection once more)
    wait_for(lambda: 'id="broker-banner"' not in _page(serve), timeout=DEADLINE_S, interval=0.2,
             what="the banner gone")


def test_fleet_serve_starts_with_the_broker_down_and_connects_when_it_comes_up(
        tmp_path: Path, broker_later: Mosquitto, device_id: str) -> None:
    serve = Serve(tmp_path, broker_later.url, FLEET_BROKER_ACCOUNTS="none")
    try:
        _started_without_the_broker(serve, broker_later)
        _connects_once_the_broker_is_up(serve, broker_later)
        device = ScriptedDevice(broker_later.port, device_id, ses=1)
        device.birth(period_s=1)
        device.health(seq=0, cpu_pct=12.0)

        def stored() -> dict[str, Any] | None:
            response = serve.http.get(f"/api/devices/{device_id}")
            body: dict[str, Any] = response.json() if response.status_code == 200 else {}
            return body if body.get("state") == "online" and body.get("last_health") else None

        wait_for(stored, timeout=DEADLINE_S, interval=0.2, what="the device's birth and health stored")
        rows = serve.http.get(f"/api/devices/{device_id}/health").json()
        assert [r["seq"] for r in rows] == [0]
        page = _page(serve, f"/devices/{device_id}")  # the status page's link: a page, not JSON
        assert re.search(r'id="device-state">online<', page) and "cpu 12%" in page
        device.close()
    finally:
        code = serve.stop()
    assert code in STOPPED, serve.log.read_text()
    assert "Traceback" not in serve.log.read_text()


@pytest.mark.parametrize("broker_later", [True], indirect=True, ids=["dynsec"])
def test_fleet_serve_with_dynamic_security_starts_with_the_broker_down(
        tmp_path: Path, broker_later: Mosquitto, device_id: str) -> None:
    serve = Serve(tmp_path, broker_later.admin_url, FLEET_BROKER_ACCOUNTS="dynsec")
    try:
        _started_without_the_broker(serve, broker_later)
        assert serve.http.post("/api/devices", json={"id": device_id, "kind": "pi"}).status_code == 201
        refused = serve.http.post(f"/api/devices/{device_id}/credentials")
        assert refused.status_code == 503 and "not reachable" in refused.json()["detail"]
        _connects_once_the_broker_is_up(serve, broker_later)

        def issued() -> dict[str, Any] | None:  # the fleet's set-up with the broker may still be running
            response = serve.http.post(f"/api/devices/{device_id}/credentials")
            return response.json()["mqtt"] if response.status_code == 200 else None

        mqtt = wait_for(issued, timeout=DEADLINE_S, interval=0.5, what="credentials issued")
        device = Client(broker_later.port, mqtt["username"], mqtt["password"])
        device.publish(f"ioc/v1/d/{device_id}/health",
                       {"v": 1, "ses": 1, "seq": 0, "ts": None, "up_s": 5, "fw": "0.1.0"})

        def stored() -> bool:
            return bool(serve.http.get(f"/api/devices/{device_id}/health").json())

        wait_for(stored, timeout=DEADLINE_S, interval=0.2, what="the device's health stored")
        device.close()
    finally:
        code = serve.stop()
    assert code in STOPPED, serve.log.read_text()
    wait_port(serve.port, up=False)
