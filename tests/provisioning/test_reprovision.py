"""Flashing a board that already has an identity, and flashes that fail (issue 10, part 3).

Against the real fleet on both brokers that check credentials (the embedded broker, and Mosquitto
with dynamic security), with boards that run the firmware on the real MicroPython unix port:
- flashing a known board again keeps its id and its record: new credentials, the old ones refused
  by the broker, the stream counter kept; `--new-identity` and `--device-id` on request;
- a flash that fails (wrong token, unreachable fleet, the cable pulled in the middle of the copy
  or once credentials were issued, a refusal after credentials were issued) leaves a board that
  boots its previous firmware and identity, and says so in its one line.
"""

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.models import DeviceCredential
from provisioning.errors import BoardStoppedAnswering, FleetUnreachable, NotAuthorised
from provisioning.hostboard import console_text, start_board, stop_board
from provisioning.image import MARKER
from provisioning.staging import STAGE
from provisioning.virtual_board import VirtualBoard
from tests.firmware.tls_peers import make_ca
from tests.provisioning.conftest import ANSWER_TIMEOUT, FIRMWARE_HEAP, Run, arun_provision
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.mqtt_client import Client, ConnectRefused
from tests.support.wait import async_wait_for

SITE = "Chợ Đồng Xoài"


@dataclass
class CheckedFleet:
    """The fleet with a broker that checks every device's password."""

    url: str
    http: httpx.AsyncClient  # logged in as an admin
    technician_token: str
    broker_port: int


@pytest.fixture(params=["embedded", "mosquitto-dynsec"])
async def checked_fleet(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CheckedFleet]:
    from fleet.auth.roles import Role
    from tests.support.fleet import fleet_settings, running_fleet, token_for

    database = f"sqlite://{tmp_path / 'fleet.sqlite3'}"
    if request.param == "embedded":
        settings = fleet_settings(database, None)
        async with running_fleet(settings) as http:
            yield CheckedFleet(str(http.base_url).rstrip("/"), http, await token_for(http, Role.TECHNICIAN),
                               settings.embedded_broker_port)
        return
    broker = Mosquitto(tmp_path / "mosquitto", secure=True)
    broker.start()
    try:
        settings = fleet_settings(database, broker.admin_url, broker_accounts="dynsec")
        async with running_fleet(settings) as http:
            yield CheckedFleet(str(http.base_url).rstrip("/"), http, await token_for(http, Role.TECHNICIAN),
                               broker.port)
    finally:
        broker.kill()


@pytest.fixture
async def embedded_fleet(tmp_path: Path) -> AsyncIterator[CheckedFleet]:
    from fleet.auth.roles import Role
    from tests.support.fleet import fleet_settings, running_fleet, token_for

    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", None)
    async with running_fleet(settings) as http:
        yield CheckedFleet(str(http.base_url).rstrip("/"), http, await token_for(http, Role.TECHNICIAN),
                           settings.embedded_broker_port)


def flash_args(fleet: CheckedFleet, port: str, *extra: str, fleet_url: str | None = None) -> list[str]:
    # plaintext: these brokers listen on loopback without TLS (TLS flashing: test_flash_tls.py)
    return ["flash", "--port", port, "--kind", "sim", "--site", SITE, "--fleet", fleet_url or fleet.url,
            "--wait", "30", "--answer-timeout", ANSWER_TIMEOUT, "--insecure-plaintext", *extra]


async def flash_online(fleet: CheckedFleet, board: VirtualBoard, *extra: str) -> tuple[str, str]:
    """Flash with the technician's token; (the result line, the device id)."""
    result = await arun_provision(*flash_args(fleet, board.port, "--token", fleet.technician_token, *extra))
    assert result.code == 0, result.err
    [line] = result.out.splitlines()
    assert " online: " in line, line
    return line, line.split()[2]


async def device(fleet: CheckedFleet, device_id: str) -> dict[str, Any]:
    response = await fleet.http.get(f"/api/devices/{device_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def online_in_new_session(fleet: CheckedFleet, device_id: str, after: int) -> dict[str, Any]:
    """The device's record once it is online in a session after `after` (it booted again)."""
    async def booted() -> dict[str, Any] | None:
        record = await device(fleet, device_id)
        return record if record["online"] and (record["session"] or 0) > after else None
    return await async_wait_for(booted, timeout=30, what=f"{device_id} online again after session {after}")


def password_of(board: VirtualBoard) -> str:
    return str(json.loads((board.board_dir / "config.json").read_text())["password"])


async def login_refused(fleet: CheckedFleet, device_id: str, password: str) -> bool:
    """Whether the broker refuses this login (a refused CONNECT touches no session on either broker)."""
    def attempt() -> bool:
        try:
            client = Client(fleet.broker_port, device_id, password)
        except ConnectRefused:
            return True
        client.close()
        return False
    return await asyncio.to_thread(attempt)


def firmware_files(board: VirtualBoard) -> dict[str, str]:
    """What the board runs (not the counters it rewrites at each boot): path -> SHA-256."""
    root = board.board_dir
    paths = [root / "main.py", root / "config.json", *sorted((root / "app_a").rglob("*"))]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def one_line(result: Run, code: int) -> str:
    assert result.code == code, (result.code, result.out, result.err)
    errors = [line for line in result.err.splitlines() if line.startswith("provision: ")]
    assert len(errors) == 1 and "Traceback" not in result.err, result.err
    return errors[0]


# keeping the identity -------------------------------------------------------------------------
async def test_reflash_keeps_the_identity_and_revokes_the_old_credentials(checked_fleet: CheckedFleet,
                                                                         firmware_board: VirtualBoard) -> None:
    fleet = checked_fleet
    _, device_id = await flash_online(fleet, firmware_board)
    old_password = password_of(firmware_board)
    before = await device(fleet, device_id)

    line, again_id = await flash_online(fleet, firmware_board)  # the same command, as a technician would
    assert again_id == device_id and "identity kept: new credentials, the old ones revoked" in line
    assert [d["id"] for d in (await fleet.http.get("/api/devices")).json()] == [device_id]  # no duplicate
    assert password_of(firmware_board) != old_password
    assert await login_refused(fleet, device_id, old_password)
    assert await DeviceCredential.filter(device_id=device_id, revoked_at=None).count() == 1
    after = await device(fleet, device_id)
    # state.json was kept: the stream counter went on from where it was (a lost counter restarts
    # at a random 48-bit value, docs/protocol.md "Streams")
    assert 0 < after["session"] - before["session"] < 1000


async def test_new_identity_on_request(embedded_fleet: CheckedFleet, firmware_board: VirtualBoard) -> None:
    fleet = embedded_fleet
    _, old_id = await flash_online(fleet, firmware_board)
    old_password = password_of(firmware_board)

    line, new_id = await flash_online(fleet, firmware_board, "--new-identity")
    assert new_id != old_id and new_id.startswith("sim-cho-dong-xoai-")
    assert f"new identity (was {old_id}): {old_id}'s credentials revoked, its record kept with its history" in line
    assert (await device(fleet, old_id))["status"] != "decommissioned"  # ops decide that
    assert await DeviceCredential.filter(device_id=old_id, revoked_at=None).count() == 0
    assert await login_refused(fleet, old_id, old_password)
    assert (await device(fleet, new_id))["online"]


async def test_device_id_takes_over_a_replaced_board(embedded_fleet: CheckedFleet, firmware_board: VirtualBoard,
                                                     tmp_path: Path) -> None:
    fleet = embedded_fleet
    _, device_id = await flash_online(fleet, firmware_board)
    old_password = password_of(firmware_board)
    firmware_board.kill()  # the old board is broken; a new one replaces it
    seen = (await device(fleet, device_id))["session"]

    with VirtualBoard(tmp_path / "spare", link=tmp_path / "ttyESP1", heapsize=FIRMWARE_HEAP) as spare:
        line, got = await flash_online(fleet, spare, "--device-id", device_id)
        assert got == device_id and f"identity {device_id} given" in line
        # the spare's streams start above what the fleet saw of the id (state.json from the fleet's record)
        assert 0 < (await device(fleet, device_id))["session"] - seen < 1000
    assert await login_refused(fleet, device_id, old_password)
    assert [d["id"] for d in (await fleet.http.get("/api/devices")).json()] == [device_id]


# failed flashes -------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["wrong token", "unreachable fleet"])
async def test_a_refused_flash_leaves_the_board_running(fault: str, embedded_fleet: CheckedFleet,
                                                        firmware_board: VirtualBoard) -> None:
    fleet = embedded_fleet
    _, device_id = await flash_online(fleet, firmware_board)
    files = firmware_files(firmware_board)
    session = (await device(fleet, device_id))["session"]
    [credential] = await DeviceCredential.filter(device_id=device_id, revoked_at=None)

    if fault == "wrong token":
        result = await arun_provision(*flash_args(fleet, firmware_board.port, "--token", "ioc_not-a-real-token"))
        line = one_line(result, NotAuthorised.exit_code)
    else:
        closed = f"http://127.0.0.1:{free_port()}"
        result = await arun_provision(*flash_args(fleet, firmware_board.port, "--token", fleet.technician_token,
                                                  fleet_url=closed))
        line = one_line(result, FleetUnreachable.exit_code)
    assert line.endswith(f"the board was not changed: its previous firmware and identity {device_id}; "
                         "it was reset and runs it again")
    assert firmware_files(firmware_board) == files
    assert not (firmware_board.board_dir / STAGE).exists() and not (firmware_board.board_dir / MARKER).exists()
    await online_in_new_session(fleet, device_id, session)  # it booted its firmware again
    assert [c.id for c in await DeviceCredential.filter(device_id=device_id, revoked_at=None)] == [credential.id]


async def test_cable_pulled_mid_copy_leaves_the_previous_firmware(embedded_fleet: CheckedFleet,
                                                                  firmware_board: VirtualBoard) -> None:
    fleet = embedded_fleet
    _, device_id = await flash_online(fleet, firmware_board)
    files = firmware_files(firmware_board)
    session = (await device(fleet, device_id))["session"]

    firmware_board.cut_link_on(f"{STAGE}/app_a/roles/".encode())  # about half-way through the firmware
    result = await arun_provision(*flash_args(fleet, firmware_board.port, "--token", fleet.technician_token))
    line = one_line(result, BoardStoppedAnswering.exit_code)
    assert firmware_board.link_cut
    assert (f"the board keeps its previous firmware and identity {device_id} (the partial copy in "
            f"{STAGE}/ is removed by the next flash); unplug and plug it in to run it") in line
    assert "credentials" not in line  # none were issued: the copy was not finished
    assert await DeviceCredential.filter(device_id=device_id).count() == 1
    assert firmware_files(firmware_board) == files and (firmware_board.board_dir / STAGE).is_dir()

    # plugged in again: the real MicroPython boots what is on it, its previous firmware and identity
    board = start_board(firmware_board.board_dir, FIRMWARE_HEAP)
    try:
        await online_in_new_session(fleet, device_id, session)
    finally:
        stop_board(board)
    assert "boot: slot a" in console_text(firmware_board.board_dir)

    firmware_board.power_cycle()  # and the same command finishes the job
    retry = await arun_provision(*flash_args(fleet, firmware_board.port, "--token", fleet.technician_token))
    assert retry.code == 0, retry.err
    assert "an earlier flash was interrupted; its partial copy was removed" in retry.err
    assert retry.out.split()[2] == device_id and "identity kept" in retry.out
    assert not (firmware_board.board_dir / STAGE).exists()


async def test_cable_pulled_once_credentials_were_issued(embedded_fleet: CheckedFleet,
                                                         firmware_board: VirtualBoard) -> None:
    fleet = embedded_fleet
    _, device_id = await flash_online(fleet, firmware_board)
    files = firmware_files(firmware_board)

    firmware_board.cut_link_on(f"{STAGE}/config.json".encode())  # right after the fleet issued credentials
    result = await arun_provision(*flash_args(fleet, firmware_board.port, "--token", fleet.technician_token))
    line = one_line(result, BoardStoppedAnswering.exit_code)
    assert (f"the board keeps its previous firmware and identity {device_id} (the partial copy in {STAGE}/ is "
            "removed by the next flash), but its old credentials were replaced: it cannot connect until it is "
            f"flashed again; the credentials issued for {device_id} were revoked") in line
    assert firmware_files(firmware_board) == files
    assert await DeviceCredential.filter(device_id=device_id, revoked_at=None).count() == 0

    firmware_board.power_cycle()
    line, again = await flash_online(fleet, firmware_board)
    assert again == device_id and "identity kept" in line


async def test_a_refusal_after_new_credentials_gives_the_board_the_new_ones(embedded_fleet: CheckedFleet,
                                                                          firmware_board: VirtualBoard,
                                                                          tmp_path: Path) -> None:
    fleet = embedded_fleet
    _, device_id = await flash_online(fleet, firmware_board)
    old_password = password_of(firmware_board)
    session = (await device(fleet, device_id))["session"]
    app = {k: v for k, v in firmware_files(firmware_board).items() if k != "config.json"}

    # the fleet's broker speaks plaintext: a TLS board is refused, once the credentials are issued
    ca = make_ca(tmp_path / "ca")
    args = [a for a in flash_args(fleet, firmware_board.port, "--token", fleet.technician_token)
            if a != "--insecure-plaintext"]
    line = one_line(await arun_provision(*args, "--ca-file", str(ca.ca)), 1)
    assert "without TLS" in line
    assert line.endswith(f"the board was put back as it was: its previous firmware and identity {device_id}, "
                         "with the new credentials in its config.json (the old ones were revoked); "
                         "it was reset and runs it again")
    assert {k: v for k, v in firmware_files(firmware_board).items() if k != "config.json"} == app
    assert password_of(firmware_board) != old_password
    assert await login_refused(fleet, device_id, old_password)
    await online_in_new_session(fleet, device_id, session)  # with its new password
