"""Client-id takeover (issue 8, finding 1), on Mosquitto with dynamic security and on the embedded broker.

A client id names a session. Whoever may use the fleet's client id, or a device's, can end that
session: the fleet's ingest stops, or a device is kicked off (its will fires) and its queued
commands go to the intruder. Each test makes the attempt, then proves the victim is untouched by
what it still does: a message sent after the attack is stored, a command sent after it arrives.
"""

import json
from typing import Any

import pytest

from tests.identity.conftest import SecureFleet
from tests.support.mqtt_client import Client, ConnectRefused
from tests.support.wait import async_wait_for, wait_for

BIRTH = {"v": 1, "ses": 1, "ts": None, "kind": "pi", "fw": "0.1.0", "roles": ["sim"],
         "boot": {"n": 1, "reason": "start"}, "period_s": 30}
DEATH = {"v": 1, "ses": 1, "ts": None, "reason": "lost"}


def health(seq: int) -> dict[str, Any]:
    return {"v": 1, "ses": 1, "seq": seq, "ts": None, "up_s": 1, "fw": "0.1.0"}


def topic(device_id: str, suffix: str) -> str:
    return f"ioc/v1/d/{device_id}/{suffix}"


async def _health_seqs(fleet: SecureFleet, device_id: str) -> list[int]:
    response = await fleet.http.get(f"/api/devices/{device_id}/health")
    return sorted(h["seq"] for h in response.json()) if response.status_code == 200 else []


async def _stored(fleet: SecureFleet, device_id: str, seqs: list[int]) -> None:
    async def done() -> bool:
        return await _health_seqs(fleet, device_id) == seqs

    await async_wait_for(done, timeout=30, what=f"{device_id}'s health {seqs} stored")


async def test_refused_connects_with_the_fleets_client_id_leave_ingest_running(secure_fleet: SecureFleet) -> None:
    fleet = secure_fleet
    password = await fleet.register("dev-ingest-1")
    device = Client(fleet.port, "dev-ingest-1", password)
    device.publish(topic("dev-ingest-1", "health"), health(0))
    await _stored(fleet, "dev-ingest-1", [0])

    fleet_ids = [fleet.client_id, f"{fleet.client_id}-accounts"]
    # 1. logins no broker accepts (the probe's attack was the first): each must leave the
    #    fleet's session alone, so a message sent after them is still stored
    strangers: list[tuple[str | None, str | None]] = [
        (None, None), ("dev-nobody", "no-such-account-pw"), ("dev-ingest-1", "a-wrong-password"),
        ("ioc-fleet", "a-guessed-password")]
    for client_id in fleet_ids:
        for username, secret in strangers:
            for clean_session in (True, False):
                with pytest.raises(ConnectRefused):
                    Client(fleet.port, username, secret, client_id=client_id, clean_session=clean_session)
    device.publish(topic("dev-ingest-1", "health"), health(1))
    await _stored(fleet, "dev-ingest-1", [0, 1])

    # 2. a real device, with its own valid credentials, under the fleet's client ids: refused too
    for client_id in fleet_ids:
        for clean_session in (True, False):
            with pytest.raises(ConnectRefused):
                Client(fleet.port, "dev-ingest-1", password, client_id=client_id, clean_session=clean_session)
    # the device's own connection is still up (its client id is its own) and the fleet still receives
    assert not device.disconnected.is_set()
    device.publish(topic("dev-ingest-1", "health"), health(2))
    await _stored(fleet, "dev-ingest-1", [0, 1, 2])
    healthz = (await fleet.http.get("/healthz")).json()
    assert healthz["ok"] is True
    device.close()


async def test_a_device_cannot_take_over_another_devices_session(secure_fleet: SecureFleet) -> None:
    fleet = secure_fleet
    victim_password = await fleet.register("dev-victim")
    intruder_password = await fleet.register("dev-intruder")
    victim = Client(fleet.port, "dev-victim", victim_password, clean_session=False,
                    will=(topic("dev-victim", "death"), json.dumps(DEATH).encode()))
    assert victim.subscribe(topic("dev-victim", "cmd")) in ([0], [1])
    assert victim.subscribe(topic("dev-victim", "state/desired")) in ([0], [1])
    victim.publish(topic("dev-victim", "birth"), BIRTH, retain=True)

    async def online() -> bool:
        return bool((await fleet.http.get("/api/devices/dev-victim")).json()["online"])

    await async_wait_for(online, timeout=30, what="the victim online")

    # the intruder, with its own valid credentials, under the victim's client id (both session
    # kinds) and under the fleet's: refused at CONNECT
    for client_id in ("dev-victim", fleet.client_id):
        for clean_session in (True, False):
            with pytest.raises(ConnectRefused):
                Client(fleet.port, "dev-intruder", intruder_password, client_id=client_id,
                       clean_session=clean_session)

    # the victim was not kicked: no will fired, it is online, it gets a command sent now
    sent = await fleet.http.post("/api/devices/dev-victim/commands", json={"name": "ping"})
    assert sent.status_code == 202
    wait_for(lambda: any(t == topic("dev-victim", "cmd") for t, _ in victim.received), timeout=30,
             what="the victim's command")
    victim.publish(topic("dev-victim", "health"), health(0))
    await _stored(fleet, "dev-victim", [0])
    assert await online() and not victim.disconnected.is_set()

    # queued for the victim while it is away: the intruder, refused again, gets none of it;
    # the victim, back under its own id, gets it
    victim.close()
    wait_for(victim.disconnected.is_set, what="the victim gone")
    queued = await fleet.http.post("/api/devices/dev-victim/commands", json={"name": "reboot"})
    assert queued.status_code == 202
    desired = await fleet.http.put("/api/devices/dev-victim/desired", json={"doc": {"light": "on"}})
    with pytest.raises(ConnectRefused):
        Client(fleet.port, "dev-intruder", intruder_password, client_id="dev-victim", clean_session=False)
    back = Client(fleet.port, "dev-victim", victim_password, clean_session=False)
    wait_for(lambda: any(b'"reboot"' in p for t, p in back.received if t == topic("dev-victim", "cmd")),
             timeout=30, what="the queued command, delivered to the victim")
    assert desired.status_code == 200, desired.text
    assert back.subscribe(topic("dev-victim", "state/desired")) in ([0], [1])
    wait_for(lambda: any(t == topic("dev-victim", "state/desired") for t, _ in back.received),
             timeout=30, what="the desired state, delivered to the victim")
    back.close()


async def test_a_will_on_another_devices_topic_is_refused(secure_fleet: SecureFleet) -> None:
    """A will is a publish the broker makes later on the client's behalf: the same topic rules."""
    fleet = secure_fleet
    victim_password = await fleet.register("dev-will-victim")
    intruder_password = await fleet.register("dev-will-intruder")
    victim = Client(fleet.port, "dev-will-victim", victim_password)
    victim.publish(topic("dev-will-victim", "birth"), BIRTH, retain=True)

    async def victim_online() -> bool:
        return bool((await fleet.http.get("/api/devices/dev-will-victim")).json()["online"])

    await async_wait_for(victim_online, timeout=30, what="the victim online")
    forged = (topic("dev-will-victim", "death"), json.dumps(DEATH).encode())
    try:
        intruder = Client(fleet.port, "dev-will-intruder", intruder_password, will=forged)
    except ConnectRefused:
        intruder = None  # the embedded broker refuses it at CONNECT
    if intruder is not None:  # Mosquitto accepts the connection and drops the will when it fires
        intruder.client.socket().close()  # an abnormal end: the will would be published now
        intruder.client.loop_stop()
    victim.publish(topic("dev-will-victim", "health"), health(0))
    await _stored(fleet, "dev-will-victim", [0])
    intruder_marker = Client(fleet.port, "dev-will-intruder", intruder_password)
    intruder_marker.publish(topic("dev-will-intruder", "health"), health(0))
    await _stored(fleet, "dev-will-intruder", [0])  # after the intruder's end, in the fleet's order
    assert await victim_online()
    victim.close()
    intruder_marker.close()


async def test_device_ids_of_the_fleets_own_account_and_client_ids_get_no_broker_account(
        secure_fleet: SecureFleet) -> None:
    """On Mosquitto, a device account named like the fleet's admin would have replaced it
    (the fleet deletes a device's old account before making the new one). Registration refuses
    such ids; the broker-account layer (`refuse_reserved`) refuses them again below it."""
    fleet = secure_fleet
    names = ["ioc-fleet", fleet.client_id, f"{fleet.client_id}-accounts"]
    if fleet.broker is not None:
        names.append(fleet.broker.admin[0])
    for name in names:
        created = await fleet.http.post("/api/devices", json={"id": name, "kind": "pi"})
        assert created.status_code == 409 and "reserved" in created.json()["detail"], name
        assert (await fleet.http.get(f"/api/devices/{name}")).status_code == 404
    # the fleet's own account still works: it still makes accounts, and still receives
    password = await fleet.register("dev-after-reserved")
    device = Client(fleet.port, "dev-after-reserved", password)
    device.publish(topic("dev-after-reserved", "health"), health(0))
    await _stored(fleet, "dev-after-reserved", [0])
    device.close()
