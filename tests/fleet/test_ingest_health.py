"""/healthz tells the ingest's real state (issue 8, finding 1): cut what the fleet depends on, see it.

Real Mosquitto: stopped, and (with dynamic security) made to stop delivering to the fleet while
its socket and subscription stay; the fleet probes itself every 0.5 s here, so the broker that
stops delivering is seen within 3 s.
"""

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_in_thread, fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

PROBE_S = 0.5


async def _report(http: httpx.AsyncClient, status: int, problem: str = "") -> dict | None:
    response = await http.get("/healthz")
    report = response.json()
    return report if response.status_code == status and problem in " ".join(report["problems"]) else None


async def _until(http: httpx.AsyncClient, status: int, problem: str = "", timeout: float = 60) -> dict:
    result: dict = await async_wait_for(lambda: _report(http, status, problem), timeout=timeout,
                                        what=f"healthz {status} {problem!r}")
    return result


async def test_healthz_is_503_while_the_broker_is_gone_and_200_when_it_is_back(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url, mqtt_probe_s=PROBE_S)
    async with running_fleet(settings) as http:
        healthy = await _until(http, 200)
        assert healthy["mqtt_connected"] and healthy["subscribed"] and healthy["ingest_running"]
        assert healthy["queue_max"] == settings.ingest_queue_max
        mosquitto.kill()
        down = await _until(http, 503, "not connected to the MQTT broker")
        assert down["ok"] is False and down["mqtt_connected"] is False and down["subscribed"] is False
        mosquitto.start()
        await _until(http, 200)
        device = ScriptedDevice(mosquitto.port, "t-after-outage", ses=1, will=False)
        device.health(seq=0)

        async def stored() -> bool:
            report = (await http.get("/healthz")).json()
            return report["last_message_at"] is not None

        await async_wait_for(stored, what="a message after the outage")
        device.close()


# the fleet's account is the dynamic-security admin in these tests: its `admin` role allows `#`, the
# `ioc-fleet` role allows the contract's topics; a deny checked first in both takes it away
FLEET_ROLES = ("admin", "ioc-fleet")
EVERY_DEVICE = "ioc/v1/d/+/#"


def _deny(broker: Mosquitto, acltype: str) -> None:
    for role in FLEET_ROLES:
        _dynsec(broker, "addRoleACL", role, acltype, EVERY_DEVICE, "deny", "100")


def _undeny(broker: Mosquitto, acltype: str) -> None:
    for role in FLEET_ROLES:
        _dynsec(broker, "removeRoleACL", role, acltype, EVERY_DEVICE)


# Mosquitto disconnects every client of a role that changes, the one asking included: the
# changes are made by a second administrator of its own role, so its answers are not lost
CONTROLLER = ("test-controller", "test-controller-password")


def _dynsec(broker: Mosquitto, *args: str, user: tuple[str, str] = CONTROLLER) -> None:
    subprocess.run(["mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(broker.port), "-u", user[0], "-P", user[1],
                    "dynsec", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
async def secure_broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto", secure=True)
    broker.start()
    control = "$CONTROL/dynamic-security/#"
    _dynsec(broker, "createRole", "test-controller", user=broker.admin)
    for acltype in ("publishClientSend", "publishClientReceive", "subscribePattern"):
        _dynsec(broker, "addRoleACL", "test-controller", acltype, control, "allow", user=broker.admin)
    _dynsec(broker, "createClient", CONTROLLER[0], "-p", CONTROLLER[1], user=broker.admin)
    _dynsec(broker, "addClientRole", CONTROLLER[0], "test-controller", user=broker.admin)
    yield broker
    broker.kill()


async def test_healthz_is_503_when_the_broker_keeps_the_socket_but_stops_delivering(
        tmp_path: Path, secure_broker: Mosquitto) -> None:
    """The embedded-broker takeover left the fleet connected and receiving nothing while /healthz
    said `mqtt_connected: true`. Here Mosquitto is told to stop delivering to the fleet's role."""
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", secure_broker.admin_url,
                              broker_accounts="dynsec", mqtt_probe_s=PROBE_S)
    async with fleet_in_thread(settings) as http:
        await _until(http, 200)
        _deny(secure_broker, "publishClientReceive")
        report = await _until(http, 503, "no probe has come back")
        assert report["mqtt_connected"] is True and report["subscribed"] is True  # the old flags said fine
        _undeny(secure_broker, "publishClientReceive")
        await _until(http, 200)


async def test_healthz_is_503_when_the_broker_refuses_the_subscription(
        tmp_path: Path, secure_broker: Mosquitto) -> None:
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", secure_broker.admin_url,
                              broker_accounts="dynsec", mqtt_probe_s=PROBE_S)
    async with fleet_in_thread(settings) as http:
        await _until(http, 200)
        # a role change makes Mosquitto disconnect the role's clients; the fleet reconnects and
        # subscribes again, and this time the broker says no
        _deny(secure_broker, "subscribePattern")
        report = await _until(http, 503, "refused the subscription")
        assert report["subscribed"] is False
        _undeny(secure_broker, "subscribePattern")
        await _until(http, 200)
