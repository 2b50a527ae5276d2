"""`provision ports`: the VID:PID recogniser (on pyserial's own port records) and the listing."""

import pytest
from serial.tools.list_ports_common import ListPortInfo

from provisioning.ports import recognise
from provisioning.virtual_board import VirtualBoard
from tests.provisioning.conftest import run_provision


def usb_port(device: str, vid: int | None, pid: int | None, description: str = "USB Serial") -> ListPortInfo:
    """What pyserial reports for a USB serial adapter (no USB bus exists on this machine)."""
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.description, info.serial_number = vid, pid, description, "0001"
    return info


@pytest.mark.parametrize(("vid", "pid", "bridge"), [
    (0x10C4, 0xEA60, "Silicon Labs CP210x"),
    (0x1A86, 0x7523, "WCH CH340"),
    (0x1A86, 0x55D4, "WCH CH9102"),
    (0x0403, 0x6001, "FTDI FT232R"),
    (0x0403, 0x6015, "FTDI FT-X"),
    (0x303A, 0x1001, "Espressif USB-JTAG/serial"),
])
def test_esp32_bridges_are_recognised(vid: int, pid: int, bridge: str) -> None:
    port = recognise(usb_port("/dev/ttyUSB0", vid, pid))
    assert port.likely_esp32 and port.bridge == bridge
    assert port.usb_id == f"{vid:04x}:{pid:04x}"


@pytest.mark.parametrize(("vid", "pid"), [(0x2341, 0x0043), (None, None)])  # an Arduino Uno; a plain UART
def test_other_ports_are_not(vid: int | None, pid: int | None) -> None:
    port = recognise(usb_port("/dev/ttyACM0", vid, pid))
    assert not port.likely_esp32 and port.bridge is None


def test_ports_lists_a_pty_backed_board(vboard: VirtualBoard) -> None:
    result = run_provision("ports", "--include", vboard.port)
    assert result.code == 0, result.err
    assert vboard.port in result.out
