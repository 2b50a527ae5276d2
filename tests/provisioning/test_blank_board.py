"""Blank boards: esptool's real serial protocol against a fake ESP32 ROM bootloader on a pty.

The fake (provisioning/fake_rom.py) is the lowest boundary there is without a board: esptool
(the real library, no stub) and the real CLI talk SLIP to it over a real serial device path.
The whole path on the virtual board, into a real fleet: test_blank_board_fleet.py.
"""

import hashlib
import os
from pathlib import Path

import pytest

from provisioning.errors import (
    BoardStoppedAnswering,
    FlashTooSmall,
    FlashVerifyFailed,
    ImageHashMismatch,
    NoBootloader,
    WrongChip,
)
from provisioning.fake_rom import FakeRom, FakeRomPort
from provisioning.micropython_image import ImageManifest
from provisioning.rom_flash import BlankBoardWriter
from tests.provisioning.conftest import run_provision

IMAGE_SIZE = 40_000  # a stand-in for the ~1.6 MB MicroPython image: the same commands, fewer blocks
OFFSET = 0x1000


@pytest.fixture
def image(tmp_path: Path) -> bytes:
    data = os.urandom(IMAGE_SIZE)
    (tmp_path / "mp.bin").write_bytes(data)
    return data


def write_manifest(tmp_path: Path, image: bytes, *, chip: str = "esp32", flash_size: str = "4MB",
                   sha256: str | None = None) -> Path:
    manifest = tmp_path / "micropython-images.toml"
    manifest.write_text(
        'default = "test-image"\n\n'
        '[image."test-image"]\n'
        f'chip = "{chip}"\nmicropython = "1.24.1"\nfile = "mp.bin"\n'
        f'sha256 = "{sha256 or hashlib.sha256(image).hexdigest()}"\noffset = {OFFSET:#x}\n'
        f'flash_size = "{flash_size}"\n')
    return manifest


def flash_blank(port: str, manifest: Path) -> tuple[int, str]:
    """The real CLI on a port; it fails before the fleet is needed, so the fleet is offline."""
    result = run_provision("flash", "--port", port, "--kind", "sim", "--site", "test", "--offline",
                           "--enrollment-token", "unused", "--broker", "mqtt://127.0.0.1:1",
                           "--fleet", "http://127.0.0.1:1", "--insecure-plaintext",
                           "--answer-timeout", "2", "--micropython-manifest", str(manifest), timeout=90)
    assert "Traceback" not in result.err
    said = [line for line in result.err.splitlines() if line.startswith("provision: ")]
    assert len(said) == 1, result.err  # one line per failure
    return result.code, said[0]


def test_happy_path_bytes_written_and_md5_checked(tmp_path: Path, image: bytes) -> None:
    manifest = ImageManifest.load(write_manifest(tmp_path, image))
    entry = manifest.choose(None)
    advanced: list[int] = []
    with FakeRomPort(FakeRom(chip="esp32", flash_size=4 << 20), link=tmp_path / "ttyROM") as rom_port:
        with BlankBoardWriter(rom_port.port) as writer:
            assert not writer.auto_reset  # a pty has no DTR/RTS: esptool connects without resetting
            assert writer.connect() == "esp32"
            assert writer.check(entry, image) == 4 << 20  # from the flash's JEDEC id (RDID)
            result = writer.write(entry, image, advanced.append)
        rom = rom_port.rom
        assert rom.written(OFFSET, len(image)) == image
        assert rom.written(OFFSET + len(image), 16) == b"\xff" * 16
        assert rom.md5_checked == [(OFFSET, len(image))]  # esptool's own verify: SPI_FLASH_MD5
        assert result.md5_checked and result.written == len(image)
        assert sum(advanced) == len(image)  # esptool's progress drove our bar to the end


@pytest.mark.parametrize("chip", ["esp8266", "esp32s3"])
def test_wrong_chip(tmp_path: Path, image: bytes, chip: str) -> None:
    manifest = write_manifest(tmp_path, image)
    with FakeRomPort(FakeRom(chip=chip), link=tmp_path / "ttyROM") as rom_port:
        code, line = flash_blank(rom_port.port, manifest)
        assert rom_port.rom.blocks_written == 0
    assert code == WrongChip.exit_code
    name = {"esp8266": "ESP8266", "esp32s3": "ESP32-S3"}[chip]
    assert line == (f"provision: {rom_port.port}: the board is an {name}, the MicroPython image test-image "
                    "is for esp32: nothing was written")


def test_image_hash_mismatch_before_any_write(tmp_path: Path, image: bytes) -> None:
    manifest = write_manifest(tmp_path, image, sha256=hashlib.sha256(b"another image").hexdigest())
    with FakeRomPort(FakeRom(), link=tmp_path / "ttyROM") as rom_port:
        code, line = flash_blank(rom_port.port, manifest)
        assert rom_port.rom.blocks_written == 0 and rom_port.rom.flash == bytearray(b"\xff" * (4 << 20))
    assert code == ImageHashMismatch.exit_code
    assert line.startswith(f"provision: the MicroPython image {tmp_path / 'mp.bin'} has SHA-256 ")
    assert line.endswith("(test-image): nothing was written")


def test_flash_too_small(tmp_path: Path, image: bytes) -> None:
    manifest = write_manifest(tmp_path, image, flash_size="4MB")
    with FakeRomPort(FakeRom(flash_size=2 << 20), link=tmp_path / "ttyROM") as rom_port:
        code, line = flash_blank(rom_port.port, manifest)
        assert rom_port.rom.blocks_written == 0
    assert code == FlashTooSmall.exit_code
    assert line == (f"provision: {rom_port.port}: the board has 2MB of flash, the MicroPython image test-image "
                    "needs 4 MB: nothing was written")


def test_md5_mismatch(tmp_path: Path, image: bytes) -> None:
    manifest = write_manifest(tmp_path, image)
    with FakeRomPort(FakeRom(flip_byte_at=OFFSET + 12_345), link=tmp_path / "ttyROM") as rom_port:
        code, line = flash_blank(rom_port.port, manifest)
        assert rom_port.rom.md5_checked == [(OFFSET, len(image))]
    assert code == FlashVerifyFailed.exit_code
    assert line == (f"provision: {rom_port.port}: the flash's MD5 after writing is not the image's (esptool: "
                    "MD5 of file does not match data in flash!); the board is not usable: run the same command "
                    "again")


def test_board_stops_answering_mid_write(tmp_path: Path, image: bytes) -> None:
    manifest = write_manifest(tmp_path, image)
    with FakeRomPort(FakeRom(stop_after_blocks=10), link=tmp_path / "ttyROM") as rom_port:
        code, line = flash_blank(rom_port.port, manifest)
        assert rom_port.rom.blocks_written == 10 and rom_port.rom.md5_checked == []
    assert code == BoardStoppedAnswering.exit_code
    assert line.startswith(f"provision: {rom_port.port}: the ROM bootloader stopped answering while writing "
                           "MicroPython (esptool: ")
    assert line.endswith("check the cable and run the same command again, which writes MicroPython again")


def test_no_bootloader_answer(tmp_path: Path, image: bytes) -> None:
    manifest = write_manifest(tmp_path, image)
    rom = FakeRom()
    rom.silent = True  # nothing answers on the port: no REPL, no ROM
    with FakeRomPort(rom, link=tmp_path / "ttyROM") as rom_port:
        code, line = flash_blank(rom_port.port, manifest)
    assert code == NoBootloader.exit_code
    assert line.startswith(f"provision: {rom_port.port}: the device does not answer (no MicroPython REPL")
    assert "; no ESP32 ROM bootloader answers either (this port cannot reset the board: hold BOOT while " \
           "plugging it in; esptool: " in line
