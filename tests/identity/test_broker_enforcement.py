"""Impersonation attempts against a broker that enforces per-device accounts: all refused.

Each refused publish is followed by a marker the device may send; once the marker is stored,
the refused message would have been stored before it (same connection, in order), so its
absence is proven without waiting for a timeout.
"""

from pathlib import Path
from typing import Any

import pytest

from tests.identity.conftest import SecureFleet
from tests.support.fleet import fleet_in_thread, fleet_settings
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_client import Client, ConnectRefused
from tests.support.tls import make_tls
from tests.support.wait import async_wait_for, wait_for

BIRTH = {"v": 1, "ses": 1, "ts": None, "kind": "pi", "fw": "0.1.0", "roles": ["sim"],
         "boot": {"n": 1, "reason": "start"}, "period_s": 30}


def health(seq: int, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "ses": 1, "seq": seq, "ts": None, "up_s": 1, "fw": "0.1.0", **extra}


async def _health_seqs(fleet: SecureFleet, device_id: str) -> list[int]:
    response = await fleet.http.get(f"/api/devices/{device_id}/health")
    return sorted(h["seq"] for h in response.json()) if response.status_code == 200 else []


async def test_devices_act_only_as_themselves(secure_fleet: SecureFleet) -> None:
    fleet = secure_fleet
    password_a = await fleet.register("dev-a")
    password_b = await fleet.register("dev-b")
    a = Client(fleet.port, "dev-a", password_a, client_id="dev-a")
    b = Client(fleet.port, "dev-b", password_b, client_id="dev-b")
    a.publish("ioc/v1/d/dev-a/birth", BIRTH, retain=True)
    a.publish("ioc/v1/d/dev-a/health", health(0))

    async def stored(device: str, seqs: list[int]) -> bool:
        return await _health_seqs(fleet, device) == seqs

    await async_wait_for(lambda: stored("dev-a", [0]), what="dev-a's own health")

    # 1. A publishes as B (B's health, B's birth): dropped by the broker
    a.publish("ioc/v1/d/dev-b/health", health(0, cpu_pct=99.0))
    a.publish("ioc/v1/d/dev-b/birth", {**BIRTH, "fw": "forged"}, retain=True)
    b.publish("ioc/v1/d/dev-b/health", health(1))  # B's own marker
    a.publish("ioc/v1/d/dev-a/health", health(1))  # A's marker, after its forgeries
    await async_wait_for(lambda: stored("dev-a", [0, 1]), what="A's marker")
    await async_wait_for(lambda: stored("dev-b", [1]), what="B's marker")
    device_b = (await fleet.http.get("/api/devices/dev-b")).json()
    # the forged birth never landed (B's own health makes it online: docs/fleet.md, "Liveness")
    assert device_b["fw"] is None and device_b["session"] is None and device_b["last_birth_at"] is None

    # 2. A subscribes to B's commands and desired state, and to everything: refused in SUBACK
    assert a.subscribe("ioc/v1/d/dev-b/cmd") == [128]
    assert a.subscribe("ioc/v1/d/dev-b/state/desired") == [128]
    assert a.subscribe("ioc/v1/d/+/cmd") == [128]
    assert a.subscribe("#") == [128]
    assert a.subscribe("ioc/v1/d/dev-a/cmd") in ([0], [1])  # its own: granted

    # 3. A writes to the fleet's topics: commands to itself or B, desired state: dropped
    c = b  # B listening to its own commands
    assert c.subscribe("ioc/v1/d/dev-b/cmd") in ([0], [1])
    a.publish("ioc/v1/d/dev-b/cmd", {"v": 1, "id": "evil", "name": "reboot", "args": {}, "exp": 9999999999999})
    a.publish("ioc/v1/d/dev-a/state/desired", {"v": 1, "version": 99, "doc": {}}, retain=True)
    sent = await fleet.http.post("/api/devices/dev-b/commands", json={"name": "ping"})  # a real one after
    assert sent.status_code == 202
    wait_for(lambda: c.received, what="the fleet's real command")
    assert [topic for topic, _ in c.received] == ["ioc/v1/d/dev-b/cmd"]
    assert b'"evil"' not in c.received[0][1]

    # 4. A talks to the broker's admin API: dropped, no account appears
    a.publish("$CONTROL/dynamic-security/v1", {"commands": [
        {"command": "createClient", "username": "intruder", "password": "intruder-password"}]})
    with pytest.raises(ConnectRefused):
        Client(fleet.port, "intruder", "intruder-password")
    for client in (a, b):
        client.close()


async def test_anonymous_wrong_password_and_unknown_user_are_refused(secure_fleet: SecureFleet) -> None:
    password = await secure_fleet.register("dev-c")
    with pytest.raises(ConnectRefused):
        Client(secure_fleet.port)  # anonymous
    with pytest.raises(ConnectRefused):
        Client(secure_fleet.port, "dev-c", password[:-1] + ("x" if password[-1] != "x" else "y"))
    with pytest.raises(ConnectRefused):
        Client(secure_fleet.port, "dev-nobody", password)
    with pytest.raises(ConnectRefused):
        Client(secure_fleet.port, "dev-c", "")
    Client(secure_fleet.port, "dev-c", password).close()  # and the right one works


async def test_rotated_and_revoked_credentials_stop_working(secure_fleet: SecureFleet) -> None:
    old = await secure_fleet.register("dev-d")
    connected = Client(secure_fleet.port, "dev-d", old)
    rotated = await secure_fleet.http.post("/api/devices/dev-d/credentials")
    new = rotated.json()["mqtt"]["password"]
    assert new != old
    wait_for(connected.disconnected.is_set, what="old session disconnected")  # both brokers do
    connected.close()
    with pytest.raises(ConnectRefused):
        Client(secure_fleet.port, "dev-d", old)
    Client(secure_fleet.port, "dev-d", new).close()
    live = Client(secure_fleet.port, "dev-d", new)
    revoked = await secure_fleet.http.post("/api/devices/dev-d/credentials/revoke")
    assert revoked.json() == {"revoked": 1}
    wait_for(live.disconnected.is_set, what="revoked session disconnected")
    live.close()
    with pytest.raises(ConnectRefused):
        Client(secure_fleet.port, "dev-d", new)
    # decommissioning revokes too
    other = await secure_fleet.register("dev-e")
    await secure_fleet.http.post("/api/devices/dev-e/decommission")
    with pytest.raises(ConnectRefused):
        Client(secure_fleet.port, "dev-e", other)
    audit = (await secure_fleet.http.get("/api/audit", params={"target": "dev-d"})).json()
    actions = [e["action"] for e in audit]
    assert actions.count("device.credentials.issue") == 2 and "device.credentials.revoke" in actions


async def test_tls_listener_carries_device_and_fleet_traffic(tmp_path: Path) -> None:
    """Mosquitto with a TLS listener (a CA made here); the fleet itself connects over mqtts://."""
    tls = make_tls(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "mosquitto", secure=True, tls=tls)
    broker.start()
    assert broker.tls_port is not None
    user, password = broker.admin
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}",
                              f"mqtts://{user}:{password}@127.0.0.1:{broker.tls_port}",
                              broker_accounts="dynsec", mqtt_ca_file=tls.ca)
    try:
        async with fleet_in_thread(settings) as http:
            fleet = SecureFleet(http, broker.tls_port, broker, tls)
            device_password = await fleet.register("dev-tls")
            issued = (await http.get("/api/devices/dev-tls")).json()
            assert issued["id"] == "dev-tls"
            client = Client(broker.tls_port, "dev-tls", device_password, ca_file=str(tls.ca))
            client.publish("ioc/v1/d/dev-tls/birth", BIRTH, retain=True)

            async def online() -> bool:
                return (await http.get("/api/devices/dev-tls")).json()["online"] is True

            await async_wait_for(online, what="birth over TLS")
            client.close()
            with pytest.raises((ConnectRefused, OSError)):  # without the CA the broker is not trusted
                Client(broker.tls_port, "dev-tls", device_password, ca_file=None)
    finally:
        broker.kill()
