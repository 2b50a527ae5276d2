"""A fake ESP32 ROM bootloader (download mode), for tests and the virtual board's blank mode.

It speaks the serial protocol esptool speaks to the chip's ROM (no flasher stub), as esptool
5.x's `loader.py` and `targets/esp32.py` use it: SLIP frames; a request is
`<dir=0, op, len, checksum> data`, a reply `<dir=1, op, len, value> data + status`, the status
being 4 bytes (`0` = ok, else `1, reason`) after the reply's data. What it answers:

- SYNC 0x08 (`07 07 12 20` + 32 x `55`): 8 replies, value non-zero (a ROM, not the stub);
- READ_REG 0x0A: chip detection, 0x40001000 holds the chip's magic value (ESP32 0x00F01D83,
  ESP8266 0xFFF0C101); the eFuses read as 0; SPI W0 after an RDID holds the JEDEC id;
- WRITE_REG 0x09: a register file; SPI user commands (`run_spiflash_command`): RDID 0x9F answers
  the flash id of `flash_size` (its capacity byte is what esptool reads as the size);
- GET_SECURITY_INFO 0x14: ESP32-S3 answers its chip id (9); ESP32 and ESP8266: not supported
  (status 1, 5), as their ROMs;
- SPI_ATTACH 0x0D, SPI_SET_PARAMS 0x0B, CHANGE_BAUDRATE 0x0F: accepted (a pty has no baud rate);
- FLASH_BEGIN 0x02 (erase size, blocks, block size, offset): the region is erased (0xFF), as the
  ROM does; refused past the end of the flash;
- FLASH_DATA 0x03: one block, its checksum (XOR, seed 0xEF) checked, written at offset + seq x
  block size;
- FLASH_END 0x04: `0` reboots (back into the loader: download mode holds); `1` leaves the loader
  and runs the app in flash (`on_run`);
- SPI_FLASH_MD5 0x13 (address, size): 32 hex digits of the MD5 of the flash there.

Not covered: the flasher stub (MEM_BEGIN/DATA/END and the stub's own commands), compressed
writes (FLASH_DEFL_*), encryption, secure download mode, real timing, the boot log a chip prints.

Faults for tests: `stop_after_blocks` (goes silent after that many FLASH_DATA blocks: a board that
stops answering mid-write) and `flip_byte_at` (one byte of flash written wrong: the MD5 differs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import struct
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SLIP_END, SLIP_ESC, SLIP_ESC_END, SLIP_ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

SYNC, READ_REG, WRITE_REG = 0x08, 0x0A, 0x09
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0F
SPI_FLASH_MD5, GET_SECURITY_INFO = 0x13, 0x14

CHIP_DETECT_MAGIC_REG = 0x40001000
MAGIC = {"esp32": 0x00F01D83, "esp8266": 0xFFF0C101}
SECURITY_INFO_CHIP_ID = {"esp32s3": 9}  # chips that answer GET_SECURITY_INFO with their id

ESP32_SPI_BASE = 0x3FF42000
SPI_CMD_REG, SPI_USR2_REG, SPI_W0_REG = ESP32_SPI_BASE, ESP32_SPI_BASE + 0x24, ESP32_SPI_BASE + 0x80
SPI_CMD_USR = 1 << 18
RDID = 0x9F
# JEDEC capacity byte of a flash of this many bytes (esptool's DETECTED_FLASH_SIZES reads it back)
CAPACITY_ID = {1 << 20: 0x14, 2 << 20: 0x15, 4 << 20: 0x16, 8 << 20: 0x17, 16 << 20: 0x18}
WINBOND = 0xEF

STATUS_OK = b"\x00\x00\x00\x00"
NOT_SUPPORTED = b"\x01\x05\x00\x00"  # ROM_INVALID_RECV_MSG
BAD_CHECKSUM = b"\x01\x07\x00\x00"
BAD_ADDRESS = b"\x01\x08\x00\x00"


def parse_flash_size(text: str) -> int:
    """'4MB' -> 4194304."""
    if not text.upper().endswith("MB") or not text[:-2].strip().isdigit():
        raise ValueError(f"not a flash size like 4MB: {text!r}")
    return int(text[:-2]) << 20


def slip(packet: bytes) -> bytes:
    body = packet.replace(bytes([SLIP_ESC]), bytes([SLIP_ESC, SLIP_ESC_ESC]))
    body = body.replace(bytes([SLIP_END]), bytes([SLIP_ESC, SLIP_ESC_END]))
    return bytes([SLIP_END]) + body + bytes([SLIP_END])


@dataclass
class FakeRom:
    """The protocol engine: `feed(bytes from the host)` returns the bytes the chip sends back."""

    chip: str = "esp32"
    flash_size: int = 4 << 20
    stop_after_blocks: int | None = None
    flip_byte_at: int | None = None  # a flash address whose byte is written inverted
    on_run: Callable[[FakeRom], None] | None = None  # FLASH_END "run the app"
    flash: bytearray = field(init=False)
    silent: bool = field(default=False, init=False)  # stopped answering
    blocks_written: int = field(default=0, init=False)
    md5_checked: list[tuple[int, int]] = field(default_factory=list, init=False)
    highest_written: int = field(default=0, init=False)  # end of the last byte written
    _frame: bytearray | None = field(default=None, init=False)
    _escape: bool = field(default=False, init=False)
    _registers: dict[int, int] = field(default_factory=dict, init=False)
    _begin: tuple[int, int] | None = field(default=None, init=False)  # (offset, block size)

    def __post_init__(self) -> None:
        if self.chip not in MAGIC and self.chip not in SECURITY_INFO_CHIP_ID:
            raise ValueError(f"unknown chip {self.chip!r}")
        if self.flash_size not in CAPACITY_ID:
            raise ValueError(f"flash size {self.flash_size} is not 1, 2, 4, 8 or 16 MB")
        self.flash = bytearray(b"\xff" * self.flash_size)

    def written(self, offset: int, size: int) -> bytes:
        return bytes(self.flash[offset:offset + size])

    # SLIP ---------------------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if self.silent:
                break
            if self._frame is None:
                if byte == SLIP_END:
                    self._frame = bytearray()
                continue  # not in a frame: a ROM ignores the bytes (mpremote's Ctrl-C, noise)
            if self._escape:
                self._escape = False
                self._frame.append({SLIP_ESC_END: SLIP_END, SLIP_ESC_ESC: SLIP_ESC}.get(byte, byte))
            elif byte == SLIP_ESC:
                self._escape = True
            elif byte == SLIP_END:
                frame, self._frame = bytes(self._frame), None
                if not frame:  # two ENDs in a row: the second opens the next frame
                    self._frame = bytearray()
                    continue
                out += self._packet(frame)
            else:
                self._frame.append(byte)
        return bytes(out)

    # requests -----------------------------------------------------------------------------
    def _packet(self, frame: bytes) -> bytes:
        if len(frame) < 8 or frame[0] != 0:
            return b""
        _, op, size, checksum = struct.unpack("<BBHI", frame[:8])
        data = frame[8:8 + size]
        if op == SYNC:
            return b"".join(self._reply(op, STATUS_OK, value=0x20120707) for _ in range(8))
        handler = {READ_REG: self._read_reg, WRITE_REG: self._write_reg, FLASH_BEGIN: self._flash_begin,
                   FLASH_DATA: self._flash_data, FLASH_END: self._flash_end, SPI_FLASH_MD5: self._md5,
                   GET_SECURITY_INFO: self._security_info}.get(op)
        if op in (SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE):
            return self._reply(op, STATUS_OK)
        if handler is None:
            return self._reply(op, NOT_SUPPORTED)
        return handler(op, data, checksum)

    def _reply(self, op: int, body: bytes, value: int = 0) -> bytes:
        return slip(struct.pack("<BBHI", 1, op, len(body), value) + body)

    def _read_reg(self, op: int, data: bytes, _: int) -> bytes:
        (address,) = struct.unpack("<I", data[:4])
        if address == CHIP_DETECT_MAGIC_REG and self.chip in MAGIC:
            value = MAGIC[self.chip]
        else:
            value = self._registers.get(address, 0)
        return self._reply(op, STATUS_OK, value=value)

    def _write_reg(self, op: int, data: bytes, _: int) -> bytes:
        for at in range(0, len(data) - 15, 16):
            address, value, mask, _delay = struct.unpack("<IIII", data[at:at + 16])
            old = self._registers.get(address, 0)
            self._registers[address] = (old & ~mask) | (value & mask)
            if address == SPI_CMD_REG and value & SPI_CMD_USR:
                self._spi_command()
        return self._reply(op, STATUS_OK)

    def _spi_command(self) -> None:
        command = self._registers.get(SPI_USR2_REG, 0) & 0xFF
        jedec = WINBOND | (0x40 << 8) | (CAPACITY_ID[self.flash_size] << 16)
        self._registers[SPI_W0_REG] = jedec if command == RDID else 0
        self._registers[SPI_CMD_REG] = 0  # done at once

    def _security_info(self, op: int, data: bytes, _: int) -> bytes:
        chip_id = SECURITY_INFO_CHIP_ID.get(self.chip)
        if chip_id is None:
            return self._reply(op, NOT_SUPPORTED)
        info = struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, chip_id, 0)
        return self._reply(op, info + STATUS_OK)

    def _flash_begin(self, op: int, data: bytes, _: int) -> bytes:
        erase_size, _blocks, block_size, offset = struct.unpack("<IIII", data[:16])
        if offset + erase_size > self.flash_size:
            return self._reply(op, BAD_ADDRESS)
        self.flash[offset:offset + erase_size] = b"\xff" * erase_size
        self._begin = (offset, block_size)
        return self._reply(op, STATUS_OK)

    def _flash_data(self, op: int, data: bytes, checksum: int) -> bytes:
        size, seq, _, _ = struct.unpack("<IIII", data[:16])
        block = bytearray(data[16:16 + size])
        state = 0xEF
        for byte in block:
            state ^= byte
        if self._begin is None or state != checksum or len(block) != size:
            return self._reply(op, BAD_CHECKSUM)
        offset, block_size = self._begin
        at = offset + seq * block_size
        if at + size > self.flash_size:
            return self._reply(op, BAD_ADDRESS)
        if self.flip_byte_at is not None and at <= self.flip_byte_at < at + size:
            block[self.flip_byte_at - at] ^= 0xFF
        self.flash[at:at + size] = block
        self.highest_written = max(self.highest_written, at + size)
        self.blocks_written += 1
        if self.stop_after_blocks is not None and self.blocks_written >= self.stop_after_blocks:
            self.silent = True
            return b""
        return self._reply(op, STATUS_OK)

    def _flash_end(self, op: int, data: bytes, _: int) -> bytes:
        run_app = struct.unpack("<I", data[:4])[0] == 1 if len(data) >= 4 else False
        reply = self._reply(op, STATUS_OK)
        if run_app and self.on_run is not None:
            self.on_run(self)
        return reply

    def _md5(self, op: int, data: bytes, _: int) -> bytes:
        address, size, _, _ = struct.unpack("<IIII", data[:16])
        if address + size > self.flash_size:
            return self._reply(op, BAD_ADDRESS)
        self.md5_checked.append((address, size))
        digest = hashlib.md5(self.flash[address:address + size]).hexdigest().encode()
        return self._reply(op, digest + STATUS_OK)


class FakeRomPort:
    """A `FakeRom` behind a pseudo-terminal: a serial port path esptool (and `provision`) can open.

    A context manager; `.port` is the path (the `link` if given), `.rom` the engine."""

    def __init__(self, rom: FakeRom, *, link: Path | str | None = None) -> None:
        self.rom = rom
        self.link = Path(link) if link is not None else None
        self.port = ""
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeRomPort:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.port)
            self.port = str(self.link)
        self._thread = threading.Thread(target=self._serve, name="fake-rom", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._master is not None
        while not self._stop.is_set():
            readable, _, _ = select.select([self._master], [], [], 0.1)
            if not readable:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            out = self.rom.feed(data)
            while out:
                out = out[os.write(self._master, out):]

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()
