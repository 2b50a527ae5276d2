"""`provision flash` against the real fleet and a private Mosquitto: register, write, reset, online."""

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleet.models import DeviceCredential, EnrollmentToken
from provisioning.errors import BoardStoppedAnswering, NotAuthorised, TokenRefused
from provisioning.image import MARKER
from provisioning.virtual_board import VirtualBoard
from tests.provisioning.conftest import ANSWER_TIMEOUT, FIRMWARE_HEAP, FleetUnderTest, arun_provision
from tests.support.wait import async_wait_for

SITE = "Ngã tư Phú Riềng Đỏ"


def flash_args(fleet: FleetUnderTest, port: str, *extra: str) -> list[str]:
    # this fleet's broker is a plaintext test Mosquitto (TLS flashing: test_flash_tls.py)
    return ["flash", "--port", port, "--kind", "sim", "--site", SITE, "--ward", "tan-phu",
            "--fleet", fleet.url, "--wait", "30", "--answer-timeout", ANSWER_TIMEOUT, "--insecure-plaintext",
            *extra]


async def device_online(fleet: FleetUnderTest, device_id: str) -> dict[str, Any] | None:
    device: dict[str, Any] = (await fleet.http.get(f"/api/devices/{device_id}")).json()
    return device if device.get("online") else None


async def enrollment_token(fleet: FleetUnderTest) -> tuple[int, str]:
    response = await fleet.http.post("/api/enrollment-tokens", json={"kind": "esp32", "site": SITE})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], body["token"]


async def test_flash_register_and_verify(fleet: FleetUnderTest, firmware_board: VirtualBoard,
                                         artifacts_dir: Path) -> None:
    started = time.monotonic()
    result = await arun_provision(*flash_args(fleet, firmware_board.port, "--token", fleet.technician_token))
    elapsed = time.monotonic() - started
    assert result.code == 0, result.err
    [line] = result.out.splitlines()
    assert " online: MicroPython 1." in line
    device_id = line.split()[2]
    device = (await fleet.http.get(f"/api/devices/{device_id}")).json()
    assert device["online"] and device["last_birth_at"]
    assert (device["kind"], device["site"], device["ward"], device["tags"]) == ("esp32", SITE, "tan-phu", ["sim"])
    config = json.loads((firmware_board.board_dir / "config.json").read_text())
    assert config["username"] == device_id and config["password"]
    assert config["broker_port"] == fleet.mosquitto.port
    # the closing note of the issue: how long flash + register + verify takes
    print(f"\nprovision flash (virtual ESP32 over a pty, real fleet + Mosquitto): {elapsed:.1f} s\n  {line}")
    (artifacts_dir / "provision-flash-time.json").write_text(json.dumps(
        {"seconds_wall": round(elapsed, 2), "result": line}, indent=1))


async def test_flash_with_an_enrollment_token_once(fleet: FleetUnderTest, firmware_board: VirtualBoard,
                                                   tmp_path: Path) -> None:
    _, token = await enrollment_token(fleet)
    # a technician with only an enrollment token cannot ask the fleet, so the tool says so
    result = await arun_provision(*flash_args(fleet, firmware_board.port, "--enrollment-token", token))
    assert result.code == 0, result.err
    assert "not verified: no API token" in result.out
    device_id = result.out.split()[2]
    device = await async_wait_for(lambda: device_online(fleet, device_id), what="the enrolled board online")
    assert device["kind"] == "esp32" and device["site"] == SITE
    with VirtualBoard(tmp_path / "board2", link=tmp_path / "ttyESP1", heapsize=FIRMWARE_HEAP) as second:
        again = await arun_provision(*flash_args(fleet, second.port, "--enrollment-token", token))
        assert not (second.board_dir / "main.py").exists()
    assert again.code == TokenRefused.exit_code, again.err
    assert again.err.strip().splitlines()[-1] == (
        "provision: the enrollment token was refused: this enrollment token has already been used; "
        "the board was put back as it was: it has no firmware, as before")


async def test_expired_enrollment_token(fleet: FleetUnderTest, firmware_board: VirtualBoard) -> None:
    token_id, token = await enrollment_token(fleet)
    await EnrollmentToken.filter(id=token_id).update(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    result = await arun_provision(*flash_args(fleet, firmware_board.port, "--enrollment-token", token))
    assert result.code == TokenRefused.exit_code, result.err
    assert "expired" in result.err.strip().splitlines()[-1]
    assert "Traceback" not in result.err


async def test_wrong_api_token(fleet: FleetUnderTest, firmware_board: VirtualBoard) -> None:
    result = await arun_provision(*flash_args(fleet, firmware_board.port, "--token", "ioc_not-a-real-token"))
    assert result.code == NotAuthorised.exit_code, result.err
    assert result.err.strip().splitlines()[-1].startswith("provision: the fleet refused the API token")


async def test_failed_write_issues_no_credentials_and_retry_completes(fleet: FleetUnderTest,
                                                                      firmware_board: VirtualBoard) -> None:
    firmware_board.fail_after(20_000)
    result = await arun_provision(*flash_args(fleet, firmware_board.port, "--token", fleet.technician_token))
    assert result.code == BoardStoppedAnswering.exit_code, result.err
    device_id = json.loads((firmware_board.board_dir / MARKER).read_text())["device_id"]
    # credentials are issued once the firmware is on the board: the copy died before, none exist
    assert f"the same command continues with {device_id}" in result.err
    assert await DeviceCredential.filter(device_id=device_id).count() == 0

    firmware_board.power_cycle()
    retry = await arun_provision(*flash_args(fleet, firmware_board.port, "--token", fleet.technician_token))
    assert retry.code == 0, retry.err
    assert retry.out.split()[2] == device_id and " online: " in retry.out
    assert await DeviceCredential.filter(device_id=device_id, revoked_at=None).count() == 1
