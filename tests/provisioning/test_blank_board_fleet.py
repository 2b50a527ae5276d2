"""A blank board, the whole path: the virtual board answers as an ESP32 ROM bootloader until
`provision flash` (the real CLI, esptool underneath) has written and verified the MicroPython
image, boots as a MicroPython board (the unix port), gets our firmware and config, and comes
online in a real fleet with a private Mosquitto."""

import hashlib
import json
import os
import time
from pathlib import Path

from provisioning.fake_rom import FakeRom
from provisioning.virtual_board import VirtualBoard
from tests.provisioning.conftest import FIRMWARE_HEAP, FleetUnderTest, arun_provision
from tests.provisioning.test_blank_board import OFFSET, write_manifest
from tests.provisioning.test_flash_fleet import flash_args

IMAGE_SIZE = 64 * 1024


async def test_blank_board_to_online(fleet: FleetUnderTest, tmp_path: Path, artifacts_dir: Path) -> None:
    image = os.urandom(IMAGE_SIZE)
    (tmp_path / "mp.bin").write_bytes(image)
    manifest = write_manifest(tmp_path, image)
    rom = FakeRom(chip="esp32", flash_size=4 << 20)
    with VirtualBoard(tmp_path / "board", link=tmp_path / "ttyESP0", heapsize=FIRMWARE_HEAP, blank=rom) as board:
        assert board.blank and not board.running
        started = time.monotonic()
        result = await arun_provision(*flash_args(fleet, board.port, "--token", fleet.technician_token,
                                                  "--micropython-manifest", str(manifest)), timeout=150)
        elapsed = time.monotonic() - started
        assert result.code == 0, result.err
        assert not board.blank
        [line] = result.out.splitlines()
        assert " online: MicroPython 1." in line
        assert "; blank board: MicroPython 1.24.1 written and verified in " in line
        device_id = line.split()[2]

    assert rom.written(OFFSET, len(image)) == image
    assert hashlib.md5(rom.written(OFFSET, len(image))).hexdigest() == hashlib.md5(image).hexdigest()
    assert rom.md5_checked == [(OFFSET, len(image))]
    device = (await fleet.http.get(f"/api/devices/{device_id}")).json()
    assert device["online"] and device["kind"] == "esp32"
    config = json.loads((tmp_path / "board" / "config.json").read_text())
    assert config["device_id"] == device_id
    assert "blank board" in result.err  # the one job bar (plain lines without a terminal)
    (artifacts_dir / "provision-blank-flash.txt").write_text(
        f"$ provision flash --port {board.port} --kind sim ... --micropython-manifest {manifest.name}\n"
        f"{result.err}{result.out}(wall {elapsed:.1f} s)\n")
