"""The firmware's builders and parsers against the contract's example messages, under MicroPython."""

from tests.firmware.support import EXAMPLES, SLOT, run_mp

CHECKS = [
    "birth.esp32",
    "death.will",
    "health.esp32",
    "cmd_result",
    "state_reported",
    "telemetry",
    "cmd",
    "state_desired",
    "sequence",
]


def test_firmware_messages_match_the_contract_examples() -> None:
    result = run_mp("mp_contract.py", str(SLOT), str(EXAMPLES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split("\n")[:-1] == [f"ok {name}" for name in CHECKS]
