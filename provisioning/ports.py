"""Serial ports, and which of them look like an ESP32 board (by the USB bridge's VID:PID)."""

import glob
import os
from dataclasses import dataclass

from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

# USB-to-serial bridges found on ESP32 boards, and Espressif's own USB.
ESP32_BRIDGES: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x10C4, 0xEA70): "Silicon Labs CP2105",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x5523): "WCH CH341",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x1A86, 0x55D3): "WCH CH343",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT-X",
    (0x303A, 0x1001): "Espressif USB-JTAG/serial",
    (0x303A, 0x4001): "Espressif USB (TinyUSB CDC)",
    (0x303A, 0x0002): "Espressif ESP32-S2 USB",
}
# Where virtual boards and socat links are usually put: shown so demos find them too.
EXTRA_PORT_GLOBS = ("/tmp/ttyESP*", "/tmp/tty-esp*")


@dataclass(frozen=True)
class Port:
    device: str
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    bridge: str | None  # the recognised ESP32 bridge, or None

    @property
    def likely_esp32(self) -> bool:
        return self.bridge is not None

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else ""


def recognise(info: ListPortInfo) -> Port:
    """Describe one pyserial port; name its bridge when its VID:PID is one ESP32 boards use."""
    bridge = None
    if info.vid is not None and info.pid is not None:
        bridge = ESP32_BRIDGES.get((info.vid, info.pid))
    description = info.description if info.description and info.description != "n/a" else ""
    return Port(device=info.device, description=description, vid=info.vid, pid=info.pid,
                serial_number=info.serial_number, bridge=bridge)


def list_serial_ports(extra: list[str] | None = None) -> list[Port]:
    """Every serial port pyserial finds, plus pty links in the usual places, ESP32-looking first."""
    ports = {info.device: recognise(info) for info in list_ports.comports(include_links=True)}
    for pattern in (*EXTRA_PORT_GLOBS, *(extra or [])):
        for path in sorted(glob.glob(pattern)):
            if path not in ports and os.path.exists(path):
                ports[path] = recognise(ListPortInfo(path))
    return sorted(ports.values(), key=lambda p: (not p.likely_esp32, p.device))
