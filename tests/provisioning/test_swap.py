"""`provision swap` on real processes (issue 17, docs/assets.md "The swap"): the real fleet, a
Mosquitto with per-device accounts (dynamic security), two virtual ESP32 boards on ptys running the
firmware (MicroPython unix port) with the light role. The old board is flashed, fitted to a pole and
given a light program; it dies; `provision swap --port` flashes a new board (the flash command's own
code path) and calls the swap API. Then: the new board applies the same program document, the old
board's MQTT password is refused by the broker, the old device is `replaced`, and the pole's history
shows both devices end to end."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fleet.auth.roles import Role
from provisioning.virtual_board import VirtualBoard
from tests.provisioning.conftest import ANSWER_TIMEOUT, FleetUnderTest, arun_provision
from tests.support.fleet import fleet_settings, running_fleet, token_for
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_client import Client, ConnectRefused
from tests.support.wait import async_wait_for

HEAP = "96k"  # the light role's program code on top of the firmware: an ESP32's heap without PSRAM
POLE = {"id": "pole-tan-phu-0042", "kind": "pole", "ward": "tan-phu", "address": "Phú Riềng Đỏ 12",
        "latitude": 11.535, "longitude": 106.883, "attributes": {"lamp_type": "LED", "lamp_w": 120}}
PROGRAM = {"default": 0, "failsafe": 100, "rules": [{"steps": [{"at": "18:00", "level": 100},
                                                               {"at": "23:00", "level": 50},
                                                               {"at": "05:30", "level": 0}]}]}


@pytest.fixture
async def secure_fleet(tmp_path: Path) -> AsyncIterator[FleetUnderTest]:
    """The fleet with a Mosquitto that checks every device's account (as in production)."""
    broker = Mosquitto(tmp_path / "mosquitto", secure=True)
    broker.start()
    try:
        settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", broker.admin_url,
                                  broker_accounts="dynsec")
        async with running_fleet(settings) as http:
            token = await token_for(http, Role.TECHNICIAN, "tech-chi")
            yield FleetUnderTest(str(http.base_url).rstrip("/"), http, token, broker)
    finally:
        broker.stop()


def common(fleet: FleetUnderTest) -> list[str]:
    return ["--fleet", fleet.url, "--token", fleet.technician_token, "--wait", "40",
            "--answer-timeout", ANSWER_TIMEOUT, "--insecure-plaintext"]


async def desired_applied(fleet: FleetUnderTest, device_id: str, version: int) -> dict[str, Any] | None:
    desired: dict[str, Any] = (await fleet.http.get(f"/api/devices/{device_id}/desired")).json()
    return desired if desired["reported_version"] == version and desired["reported_status"] == "applied" else None


async def test_swap_a_light_controller(secure_fleet: FleetUnderTest, tmp_path: Path) -> None:
    fleet = secure_fleet
    assert (await fleet.http.post("/api/assets", json=POLE)).status_code == 201
    with VirtualBoard(tmp_path / "old", link=tmp_path / "ttyOLD", heapsize=HEAP) as old_board:
        flashed = await arun_provision("flash", "--port", old_board.port, "--kind", "light", "--site", POLE["id"],
                                       "--ward", "tan-phu", *common(fleet))
        assert flashed.code == 0, flashed.err
        old_id = flashed.out.split()[2]
        fit = await fleet.http.post(f"/api/assets/{POLE['id']}/fit", json={"device_id": old_id})
        assert fit.status_code == 200, fit.text
        put = await fleet.http.put(f"/api/devices/{old_id}/desired", json={"doc": {"light": PROGRAM}})
        assert put.status_code == 200, put.text
        await async_wait_for(lambda: desired_applied(fleet, old_id, 1), timeout=40, what="the old board's program")
        old_config = json.loads((old_board.board_dir / "config.json").read_text())
    # the old board is gone (the controller failed); a new one is plugged in
    with VirtualBoard(tmp_path / "new", link=tmp_path / "ttyNEW", heapsize=HEAP) as new_board:
        swapped = await arun_provision("swap", "--asset", POLE["id"], "--port", new_board.port, *common(fleet))
        assert swapped.code == 0, swapped.err
        lines = swapped.out.splitlines()
        print("\nprovision swap (virtual ESP32, real fleet + Mosquitto with accounts):\n  " + "\n  ".join(lines))
        assert lines[0].startswith(f"before: asset {POLE['id']} (pole, ward tan-phu) carries {old_id} ")
        assert lines[0].endswith(", desired v1")
        new_id = lines[1].split()[2]
        assert lines[1].startswith(f"ok {new_board.port} {new_id} ") and " online: " in lines[1]
        assert lines[2].startswith(f"swap: {old_id} replaced, 1 credential(s) revoked")
        assert lines[3].startswith(f"after: asset {POLE['id']} carries {new_id} (online")
        assert "program applied v1" in lines[3] and f"old {old_id} (" in lines[3] and "status replaced" in lines[3]

        # the new board runs the same program: its reported state applies the document moved to it
        new_desired = (await fleet.http.get(f"/api/devices/{new_id}/desired")).json()
        assert new_desired["doc"] == {"light": PROGRAM}
        assert (new_desired["reported_version"], new_desired["reported_status"]) == (new_desired["version"], "applied")
        assert (await fleet.http.get(f"/api/devices/{old_id}")).json()["status"] == "replaced"
        new_device = (await fleet.http.get(f"/api/devices/{new_id}")).json()
        assert (new_device["ward"], new_device["latitude"]) == ("tan-phu", POLE["latitude"])  # the pole's place
        # the old board's password is refused by the broker itself
        with pytest.raises(ConnectRefused, match=r"[Nn]ot authori[sz]ed"):
            Client(fleet.mosquitto.port, old_config["username"], old_config["password"])
        # the pole's history: the old device, then the new one, end to end
        history = (await fleet.http.get(f"/api/assets/{POLE['id']}/history")).json()
        assert [p["device_id"] for p in history["pieces"]] == [old_id, new_id]
        assert history["pieces"][0]["end"] == history["pieces"][1]["start"] and history["gaps"] == []
        # the same swap again (a lost answer): done already, nothing changes
        again = await arun_provision("swap", "--asset", POLE["id"], "--device-id", new_id, *common(fleet))
        assert again.code == 0, again.err
        assert "swap: already done" in again.out
