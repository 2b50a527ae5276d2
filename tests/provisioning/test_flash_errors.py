"""`provision flash` failures that need no fleet: each one line on stderr and its own exit status."""

import json
import os
import socket
from pathlib import Path

import serial

from provisioning.errors import (
    BoardStoppedAnswering,
    FleetUnreachable,
    NoBootloader,
    PortBusy,
    PortNotFound,
)
from provisioning.image import MANIFEST, MARKER
from provisioning.virtual_board import VirtualBoard
from tests.provisioning.conftest import ANSWER_TIMEOUT, Run, run_provision
from tests.support.mosquitto import free_port

# plaintext: these tests are about boards and ports (TLS flashing: test_flash_tls.py)
OFFLINE = ("--kind", "sim", "--site", "Chợ Đồng Xoài", "--offline", "--enrollment-token", "ioc_test-token",
           "--broker", "127.0.0.1:1883", "--fleet", "http://fleet.example:8000", "--insecure-plaintext",
           "--answer-timeout", ANSWER_TIMEOUT)


def one_line_error(result: Run, code: int) -> str:
    assert result.code == code, (result.code, result.out, result.err)
    errors = [line for line in result.err.splitlines() if line.startswith("provision: ")]
    assert len(errors) == 1, result.err
    assert "Traceback" not in result.err
    return errors[0]


def test_offline_flash_writes_firmware_and_enrollment_config(vboard: VirtualBoard) -> None:
    result = run_provision("flash", "--port", vboard.port, *OFFLINE, "--wifi-ssid", "DX-IOC",
                           "--wifi-password", "s3cret")
    assert result.code == 0, result.err
    assert "MicroPython 1." in result.err  # the board's version, shown while working
    [line] = result.out.splitlines()
    assert line.startswith(f"ok {vboard.port} sim-cho-dong-xoai-")
    board = vboard.board_dir
    config = json.loads((board / "config.json").read_text())
    assert config["device_id"] == line.split()[2]
    assert config["enrollment_token"] == "ioc_test-token"
    assert config["fleet_url"] == "http://fleet.example:8000"
    assert "password" not in config and config["roles"] == ["sim"]
    assert config["insecure_plaintext"] is True and not (board / "ca.der").exists()
    assert (config["wifi_ssid"], config["wifi_password"]) == ("DX-IOC", "s3cret")
    assert (board / "main.py").exists() and (board / "app_a" / "app.mpy").exists()  # the slot goes precompiled
    manifest = json.loads((board / MANIFEST).read_text())
    assert manifest["device_id"] == config["device_id"] and "app_a/device.mpy" in manifest["files"]
    assert not (board / MARKER).exists()


def test_wrong_port() -> None:
    line = one_line_error(run_provision("flash", "--port", "/dev/ttyNOPE9", *OFFLINE), PortNotFound.exit_code)
    assert "/dev/ttyNOPE9" in line and "no such serial port" in line


def test_port_busy(vboard: VirtualBoard) -> None:
    with serial.Serial(vboard.port, exclusive=True):  # a serial monitor holding the port
        line = one_line_error(run_provision("flash", "--port", vboard.port, *OFFLINE), PortBusy.exit_code)
    assert "in use" in line


def test_not_a_micropython_board(junk_port: str) -> None:
    # neither a MicroPython REPL nor an ESP32 ROM bootloader (a blank board) answers
    line = one_line_error(run_provision("flash", "--port", junk_port, *OFFLINE), NoBootloader.exit_code)
    assert "not like a MicroPython board" in line and "no ESP32 ROM bootloader answers either" in line


def test_silent_port(tmp_path: Path) -> None:
    master, slave = os.openpty()  # nothing reads the other end
    link = tmp_path / "ttySILENT"
    link.symlink_to(os.ttyname(slave))
    try:
        line = one_line_error(run_provision("flash", "--port", str(link), *OFFLINE), NoBootloader.exit_code)
    finally:
        os.close(master)
        os.close(slave)
    assert "does not answer" in line and "no ESP32 ROM bootloader answers either" in line


def test_fleet_unreachable(vboard: VirtualBoard) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = run_provision("flash", "--port", vboard.port, "--kind", "sim", "--site", "x", "--fleet", closed,
                           "--token", "ioc_whatever", "--insecure-plaintext")
    line = one_line_error(result, FleetUnreachable.exit_code)
    assert "cannot reach the fleet" in line and "--offline" in line
    assert not (vboard.board_dir / "main.py").exists()  # nothing was written


def test_board_dies_mid_copy_then_is_reflashed_cleanly(vboard: VirtualBoard) -> None:
    vboard.fail_after(20_000)  # about a third of the firmware
    line = one_line_error(run_provision("flash", "--port", vboard.port, *OFFLINE),
                          BoardStoppedAnswering.exit_code)
    assert "stopped answering" in line
    board = vboard.board_dir
    interrupted = json.loads((board / MARKER).read_text())["device_id"]
    assert not (board / "main.py").exists()  # a half-written board does not boot half a firmware
    assert not (board / MANIFEST).exists()

    vboard.power_cycle()
    result = run_provision("flash", "--port", vboard.port, *OFFLINE)
    assert result.code == 0, result.err
    assert "interrupted" in result.err
    assert result.out.split()[2] == interrupted  # the same identity, no orphan in the registry
    assert not (board / MARKER).exists()
    manifest = json.loads((board / MANIFEST).read_text())
    for path in manifest["files"]:
        assert (board / path).is_file(), path


def test_batch_reports_each_board(vboard: VirtualBoard, tmp_path: Path) -> None:
    with VirtualBoard(tmp_path / "board2", link=tmp_path / "ttyESP1") as second:
        result = run_provision("flash", "--port", vboard.port, "--port", "/dev/ttyNOPE9", "--port", second.port,
                               *OFFLINE)
    assert result.code == PortNotFound.exit_code, result.err
    assert [line.split()[1] for line in result.out.splitlines()] == [vboard.port, second.port]
    assert "provision: /dev/ttyNOPE9: no such serial port" in result.err
    assert "provision: 1 of 3 boards failed (2 done)" in result.err


def test_free_port_is_closed() -> None:  # guards the "fleet unreachable" test's premise
    port = free_port()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
