"""Enrollment cannot take over a device: an unbound token never gets an id that exists.

The attack (issue 8, finding 2): with any enrollment token, ask for the id of a live device.
Before the fix the fleet issued new credentials for it, which revoked the victim's password,
disconnected it and let the attacker publish as the victim.
"""

import asyncio
from typing import Any

import pytest

from tests.identity.conftest import SecureFleet
from tests.support.mqtt_client import Client, ConnectRefused
from tests.support.wait import async_wait_for

BIRTH = {"v": 1, "ses": 1, "ts": None, "kind": "pi", "fw": "0.1.0", "roles": ["sim"],
         "boot": {"n": 1, "reason": "start"}, "period_s": 30}


def health(seq: int) -> dict[str, Any]:
    return {"v": 1, "ses": 1, "seq": seq, "ts": None, "up_s": 1, "fw": "0.1.0"}


async def _token(fleet: SecureFleet, **bound: str) -> dict[str, Any]:
    response = await fleet.http.post("/api/enrollment-tokens", json={"kind": "pi", "site": "Tan Phu", **bound})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _enroll(fleet: SecureFleet, token: str, device_id: str | None = None) -> Any:
    body = {"token": token} if device_id is None else {"token": token, "device_id": device_id}
    return await fleet.http.post("/api/enroll", json=body, headers={"Authorization": ""})


async def _stored(fleet: SecureFleet, device_id: str, seq: int) -> bool:
    response = await fleet.http.get(f"/api/devices/{device_id}/health")
    return response.status_code == 200 and seq in {h["seq"] for h in response.json()}


async def test_an_unbound_token_cannot_take_an_active_device(secure_fleet: SecureFleet) -> None:
    fleet = secure_fleet
    password = await fleet.register("victim-01")
    victim = Client(fleet.port, "victim-01", password, client_id="victim-01")
    victim.publish("ioc/v1/d/victim-01/birth", BIRTH, retain=True)
    victim.publish("ioc/v1/d/victim-01/health", health(0))
    await async_wait_for(lambda: _stored(fleet, "victim-01", 0), what="the victim's first health")
    assert (await fleet.http.get("/api/devices/victim-01")).json()["status"] == "active"

    stolen = await _token(fleet)  # any token the attacker got hold of, bound to no device
    attack = await _enroll(fleet, stolen["token"], "victim-01")
    assert attack.status_code == 409, attack.text
    assert "already exists" in attack.json()["detail"] and "mqtt" not in attack.json()

    # the victim is still connected and still publishing with its password
    victim.publish("ioc/v1/d/victim-01/health", health(1))
    await async_wait_for(lambda: _stored(fleet, "victim-01", 1), what="the victim's health after the attack")
    assert not victim.disconnected.is_set()
    victim.close()
    Client(fleet.port, "victim-01", password, client_id="victim-01").close()  # its credentials still work
    issued = [e for e in (await fleet.http.get("/api/audit", params={"target": "victim-01"})).json()
              if e["action"] == "device.credentials.issue"]
    assert len(issued) == 1  # only the original issue

    # the refusal is audited with its reason; the token is not spent, so an honest mistake costs nothing
    audit = (await fleet.http.get("/api/audit", params={"action": "enroll.refused"})).json()
    assert [(e["target"], e["detail"]) for e in audit] == [("victim-01", {"why": "id taken"})]
    tokens = {t["id"]: t for t in (await fleet.http.get("/api/enrollment-tokens")).json()}
    assert tokens[stolen["id"]]["used_at"] is None
    fresh = await _enroll(fleet, stolen["token"], "pi-tan-phu-fresh")
    assert fresh.status_code == 200 and fresh.json()["device_id"] == "pi-tan-phu-fresh"


async def test_no_enrollment_gets_the_fleets_own_account(secure_fleet: SecureFleet) -> None:
    """On Mosquitto this would have replaced the fleet's dynamic-security administrator."""
    fleet = secure_fleet
    own = fleet.broker.admin[0] if fleet.broker is not None else "ioc-fleet"
    unbound = await _token(fleet)
    refused = await _enroll(fleet, unbound["token"], own)
    assert refused.status_code == 409 and "fleet's own" in refused.json()["detail"], refused.text
    bound = await _token(fleet, device_id=own)  # not even with a token bound to it
    refused = await _enroll(fleet, bound["token"])
    assert refused.status_code == 409 and "fleet's own" in refused.json()["detail"], refused.text
    # the fleet still runs the broker's accounts and still hears devices
    password = await fleet.register("after-01")
    device = Client(fleet.port, "after-01", password, client_id="after-01")
    device.publish("ioc/v1/d/after-01/health", health(0))
    await async_wait_for(lambda: _stored(fleet, "after-01", 0), what="health after the attempts")
    device.close()


async def test_a_token_bound_to_the_id_reprovisions_it(secure_fleet: SecureFleet) -> None:
    """The one way to enroll an existing id: a token ops issued for exactly that id."""
    fleet = secure_fleet
    old = await fleet.register("lamp-reflash")
    other = await _token(fleet, device_id="some-other-id")
    assert (await _enroll(fleet, other["token"], "lamp-reflash")).status_code == 403
    bound = await _token(fleet, device_id="lamp-reflash")
    answer = await _enroll(fleet, bound["token"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["device_id"] == "lamp-reflash"
    new = answer.json()["mqtt"]["password"]
    with pytest.raises(ConnectRefused):
        Client(fleet.port, "lamp-reflash", old)
    Client(fleet.port, "lamp-reflash", new, client_id="lamp-reflash").close()


async def test_two_tokens_racing_for_one_new_id_one_wins(secure_fleet: SecureFleet) -> None:
    fleet = secure_fleet
    first, second = await _token(fleet), await _token(fleet)
    answers = await asyncio.gather(_enroll(fleet, first["token"], "pi-race-01"),
                                   _enroll(fleet, second["token"], "pi-race-01"))
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 200).json()["mqtt"]["password"]
    Client(fleet.port, "pi-race-01", winner, client_id="pi-race-01").close()
    tokens = {t["id"]: t["used_at"] for t in (await fleet.http.get("/api/enrollment-tokens")).json()}
    assert sum(1 for t in (first, second) if tokens[t["id"]] is None) == 1  # the loser keeps its token
