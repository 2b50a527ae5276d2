"""The ESP32 HAL, with machine/network/esp32 replaced by recorders, under MicroPython."""

from tests.firmware.support import SLOT, run_mp


def test_esp32_hal_maps_the_board_to_the_contract() -> None:
    result = run_mp("mp_esp32_hal.py", str(SLOT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split("\n")[:-1] == ["ok reset_cause", "ok wifi", "ok board", "ok clock"]
