"""Presence after a broker crash (issue 9 §4), with real Mosquitto killed by SIGKILL.

A killed broker never sends the wills of the connections it had: a device that dies while it is
down leaves no death behind, and the fleet used to show it `online: true` for ever. Now the fleet
judges for itself (fleet/liveness.py): nothing heard for the device's health period x
FLEET_SILENT_AFTER_PERIODS while the fleet hears the broker is offline, reason `silent`, and the
device's next message brings it back. Devices here declare `period_s: 1`, so the verdict comes
3 s after the fleet hears the broker again; every wait has a generous deadline, no duration is
asserted.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

PERIOD_S = 1  # the smallest health period the contract allows (a count of seconds, 0 means none)
FAST = {"mqtt_probe_s": 0.5, "presence_sweep_s": 0.2}
DEADLINE_S = 60.0


def _device_is(http: httpx.AsyncClient, device_id: str,
               **expected: Any) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    async def check() -> dict[str, Any] | None:
        response = await http.get(f"/api/devices/{device_id}")
        body: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return body if body and all(body.get(k) == v for k, v in expected.items()) else None

    return check


async def _until(http: httpx.AsyncClient, device_id: str, **expected: Any) -> dict[str, Any]:
    found: dict[str, Any] = await async_wait_for(_device_is(http, device_id, **expected), timeout=DEADLINE_S,
                                                 interval=0.1, what=f"{device_id} {expected}")
    return found


def _born(port: int, device_id: str, ses: int) -> ScriptedDevice:
    device = ScriptedDevice(port, device_id, ses=ses)
    device.birth(period_s=PERIOD_S)
    device.health()
    return device


async def test_a_device_that_dies_while_the_broker_is_down_goes_offline_as_silent_and_comes_back(
        database_url: str, mosquitto: Mosquitto, device_id: str) -> None:
    settings = fleet_settings(database_url, mosquitto.url, **FAST)
    async with running_fleet(settings) as http:
        device = _born(mosquitto.port, device_id, ses=1)
        await _until(http, device_id, state="online", online=True)
        mosquitto.kill()  # SIGKILL: the will of the device's connection is never sent
        device.kill()  # and the device dies while the broker is down
        blind = await _until(http, device_id, state="unknown")
        assert blind["state_reason"] == "fleet_disconnected" and blind["online"] is True
        mosquitto.start()  # no will ever comes: only the fleet's own verdict can say offline
        silent = await _until(http, device_id, state="offline", online=False)  # online false: the sweep wrote it
        assert silent["state_reason"] == "silent" and silent["silenced_at"] is not None
        assert silent["last_death_reason"] is None  # no death was received: the verdict is the fleet's
        offline = (await http.get("/api/devices", params={"state": "offline"})).json()
        assert device_id in [d["id"] for d in offline]
        assert device_id not in [d["id"] for d in (await http.get("/api/devices", params={"state": "online"})).json()]

        back = _born(mosquitto.port, device_id, ses=2)  # the device starts again: its birth
        again = await _until(http, device_id, state="online", online=True)
        assert again["state_reason"] is None and again["session"] == 2
        back.close()


async def test_a_device_silent_on_a_standing_connection_is_offline_and_its_next_health_brings_it_back(
        database_url: str, mosquitto: Mosquitto, device_id: str) -> None:
    """The broker keeps the connection (keep-alive pings), the device sends nothing: its health
    is what the fleet judges by. Its next health, in the same session, is all it takes."""
    settings = fleet_settings(database_url, mosquitto.url, **FAST)
    async with running_fleet(settings) as http:
        device = _born(mosquitto.port, device_id, ses=5)
        await _until(http, device_id, state="online")
        silent = await _until(http, device_id, state="offline", online=False)
        assert silent["state_reason"] == "silent"
        device.health()  # the connection stood all along
        back = await _until(http, device_id, state="online", online=True)
        assert back["session"] == 5 and back["state_reason"] is None
        stale = (await http.get("/api/devices", params={"state": "stale"})).json()
        assert isinstance(stale, list)  # ?state=stale is a filter (it was a 422 as ?status=stale)
        device.close()


async def test_a_device_that_dies_while_broker_and_fleet_are_down_is_offline_after_the_fleet_restarts(
        database_url: str, mosquitto: Mosquitto, device_id: str) -> None:
    """The verdict comes from stored times, not from timers of the process that saw the device:
    the fleet is restarted while the broker is down, and starts without it."""
    settings = fleet_settings(database_url, mosquitto.url, **FAST)
    async with running_fleet(settings) as http:
        device = _born(mosquitto.port, device_id, ses=1)
        await _until(http, device_id, state="online")
        mosquitto.kill()
        device.kill()
    async with running_fleet(settings) as http:  # the broker is still down
        blind = await _until(http, device_id, state="unknown")
        assert blind["online"] is True
        mosquitto.start()
        silent = await _until(http, device_id, state="offline", online=False)
        assert silent["state_reason"] == "silent"
        back = _born(mosquitto.port, device_id, ses=2)
        await _until(http, device_id, state="online", online=True)
        back.close()


async def test_status_and_state_filters(fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """`status` is the registry; a connection state there is answered with where it belongs."""
    device = _born(mosquitto.port, device_id, ses=1)
    await _until(fleet, device_id, state="online")
    wrong = await fleet.get("/api/devices", params={"status": "stale"})
    assert wrong.status_code == 422
    [issue] = wrong.json()["detail"]
    assert issue["loc"] == ["query", "status"] and "filtered with state=" in issue["msg"]
    assert "registered, discovered, active or decommissioned" in issue["msg"]
    bad = await fleet.get("/api/devices", params={"state": "asleep"})
    assert bad.status_code == 422
    for state, present in (("online", True), ("offline", False), ("never_seen", False)):
        ids = [d["id"] for d in (await fleet.get("/api/devices", params={"state": state})).json()]
        assert (device_id in ids) is present, state
    registered = [d["id"] for d in (await fleet.get("/api/devices", params={"status": "discovered"})).json()]
    assert device_id in registered  # heard from, never registered
    device.close()
