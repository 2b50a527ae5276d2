"""A fleet whose broker enforces accounts: real Mosquitto with dynamic security, or the embedded one."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.fleet import fleet_in_thread, fleet_settings
from tests.support.mosquitto import Mosquitto
from tests.support.tls import TlsFiles, make_tls


@dataclass
class SecureFleet:
    http: httpx.AsyncClient
    port: int  # where devices connect
    broker: Mosquitto | None  # None: the embedded broker
    tls: TlsFiles | None = None
    client_id: str = ""  # the fleet's own MQTT client id (FLEET_MQTT_CLIENT_ID)

    async def register(self, device_id: str, kind: str = "pi") -> str:
        """Register a device and issue its credentials; returns the password."""
        created = await self.http.post("/api/devices", json={"id": device_id, "kind": kind})
        assert created.status_code == 201, created.text
        issued = await self.http.post(f"/api/devices/{device_id}/credentials")
        assert issued.status_code == 200, issued.text
        return str(issued.json()["mqtt"]["password"])


@pytest.fixture(params=["mosquitto", "embedded"])
async def secure_fleet(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SecureFleet]:
    database = f"sqlite://{tmp_path / 'fleet.sqlite3'}"
    if request.param == "mosquitto":
        tls = make_tls(tmp_path / "tls")
        broker = Mosquitto(tmp_path / "mosquitto", secure=True, tls=tls)
        broker.start()
        try:
            settings = fleet_settings(database, broker.admin_url, broker_accounts="dynsec")
            async with fleet_in_thread(settings) as http:
                yield SecureFleet(http, broker.port, broker, tls, settings.mqtt_client_id)
        finally:
            broker.kill()
    else:
        settings = fleet_settings(database, None)
        async with fleet_in_thread(settings) as http:
            yield SecureFleet(http, settings.embedded_broker_port, None, client_id=settings.mqtt_client_id)
