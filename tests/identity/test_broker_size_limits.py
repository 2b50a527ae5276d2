"""Oversized messages (issue 8, finding 8): a device's 256 KB and 10 MB publishes stop at the broker.

Mosquitto holds every client to `max_packet_size` (the fleet's largest message); the embedded
broker holds a device to the contract's 8 KB. The oversized publish is retained, as a forged
birth would be; a subscriber that then asks for the retained birth must get the real one.
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.broker_auth.limits import DEVICE_PAYLOAD_MAX
from tests.identity.conftest import SecureFleet
from tests.support.embedded import standalone_embedded_broker
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_client import Client, ConnectRefused
from tests.support.wait import async_wait_for, wait_for

BIRTH = {"v": 1, "ses": 1, "ts": None, "kind": "pi", "fw": "0.1.0", "roles": ["sim"],
         "boot": {"n": 1, "reason": "start"}, "period_s": 30}
SIZES = (256 * 1024, 10 * 1024 * 1024)


@dataclass
class Target:
    kind: str
    port: int
    watcher: tuple[str, str, str]  # user, password, client id of an account that reads devices' topics
    issue: Callable[[str], str]  # device id -> its password


@pytest.fixture(params=["mosquitto", "embedded"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "embedded":
        with standalone_embedded_broker(tmp_path) as embedded:
            yield Target("embedded", embedded.port, embedded.fleet_login, embedded.issue)
        return
    mosquitto = Mosquitto(tmp_path / "mosquitto", secure=True)
    mosquitto.start()
    admin = Client(mosquitto.port, *mosquitto.admin, client_id="test-admin")

    def control(*commands: dict[str, object]) -> None:
        admin.publish("$CONTROL/dynamic-security/v1", {"commands": list(commands)})

    def issue(device_id: str) -> str:
        """An account like the fleet makes (tests/identity/test_broker_enforcement.py checks those)."""
        password = f"pw-{device_id}-0123456789"
        control({"command": "createRole", "rolename": f"r-{device_id}", "acls": [
                    {"acltype": "publishClientSend", "topic": f"ioc/v1/d/{device_id}/#", "allow": True}]},
                {"command": "createClient", "username": device_id, "password": password, "clientid": device_id,
                 "roles": [{"rolename": f"r-{device_id}"}]})
        wait_for(lambda: _can_connect(mosquitto.port, device_id, password), what="the device account")
        return password

    watcher = ("watcher", "watcher-password-0123", "watcher")
    control({"command": "createRole", "rolename": "watch", "acls": [
                {"acltype": "subscribePattern", "topic": "ioc/v1/d/#", "allow": True},
                {"acltype": "publishClientReceive", "topic": "ioc/v1/d/#", "allow": True}]},
            {"command": "createClient", "username": watcher[0], "password": watcher[1],
             "roles": [{"rolename": "watch"}]})
    wait_for(lambda: _can_connect(mosquitto.port, watcher[0], watcher[1]), what="the watcher account")
    try:
        yield Target("mosquitto", mosquitto.port, watcher, issue)
    finally:
        admin.close()
        mosquitto.kill()


def _can_connect(port: int, user: str, password: str) -> bool:
    try:
        Client(port, user, password).close()
    except ConnectRefused:
        return False
    return True


def test_oversized_publishes_are_not_delivered_nor_retained(target: Target) -> None:
    password = target.issue("dev-big")
    birth_topic, health_topic = "ioc/v1/d/dev-big/birth", "ioc/v1/d/dev-big/health"
    user, secret, client_id = target.watcher
    watcher = Client(target.port, user, secret, client_id=client_id)
    assert watcher.subscribe("ioc/v1/d/dev-big/#") in ([0], [1])

    device = Client(target.port, "dev-big", password)
    real_birth = json.dumps(BIRTH).encode()
    device.publish(birth_topic, real_birth, retain=True)
    wait_for(lambda: (birth_topic, real_birth) in watcher.received, what="the real birth")
    sizes = SIZES if target.kind == "mosquitto" else (DEVICE_PAYLOAD_MAX + 1, *SIZES)
    for n, size in enumerate(sizes):
        device.client.publish(birth_topic, b"x" * size, qos=1, retain=True)
        wait_for(device.disconnected.is_set, timeout=60, what=f"the device cut off after {size} bytes")
        device.close()
        device = Client(target.port, "dev-big", password)
        marker = json.dumps({"marker": n}).encode()
        device.publish(health_topic, marker)
        # the marker left after the oversized message; the broker delivers in order
        wait_for(lambda m=marker: (health_topic, m) in watcher.received, timeout=60, what="the marker")
    assert max(len(payload) for _, payload in watcher.received) <= DEVICE_PAYLOAD_MAX
    assert not device.disconnected.is_set()
    device.close()
    watcher.close()

    # a new subscriber gets the real birth as the retained one, not an oversized one
    fresh = Client(target.port, user, secret, client_id=client_id)
    assert fresh.subscribe(birth_topic) in ([0], [1])
    wait_for(lambda: fresh.received, what="the retained birth")
    assert fresh.received[0] == (birth_topic, real_birth)
    fresh.close()


async def test_oversized_publishes_never_reach_the_fleet(secure_fleet: SecureFleet) -> None:
    """The same through the whole fleet: nothing oversized is received, the markers are stored."""
    fleet = secure_fleet
    password = await fleet.register("dev-huge")
    device = Client(fleet.port, "dev-huge", password)
    for seq, size in enumerate(SIZES):
        device.client.publish("ioc/v1/d/dev-huge/birth", b"x" * size, qos=1, retain=True)
        wait_for(device.disconnected.is_set, timeout=60, what=f"the device cut off after {size} bytes")
        device.close()
        device = Client(fleet.port, "dev-huge", password)
        device.publish("ioc/v1/d/dev-huge/health",
                       {"v": 1, "ses": 1, "seq": seq, "ts": None, "up_s": 1, "fw": "0.1.0"})

    async def markers_stored() -> bool:
        response = await fleet.http.get("/api/devices/dev-huge/health")
        return response.status_code == 200 and len(response.json()) == len(SIZES)

    await async_wait_for(markers_stored, timeout=60, what="the markers stored")
    stats = (await fleet.http.get("/api/ingest/stats")).json()
    assert stats["rejected"].get("oversized", 0) == 0
    assert all(r["size"] <= DEVICE_PAYLOAD_MAX for r in stats["recent_rejects"])
    device.close()
