"""Firmware policies (backoff, buffer bound, command memory, desired state, counters) under MicroPython."""

from pathlib import Path

import pytest

from tests.firmware.support import SLOT, run_mp

CASES = [
    "backoff_doubles_with_jitter_up_to_the_cap",
    "commands_answer_every_command",
    "commands_without_a_clock_are_not_expired",
    "counters_number_streams",
    "desired_state_is_stored_applied_and_reported",
    "duplicate_command_is_answered_not_rerun",
    "outbox_drops_oldest_at_the_bound",
    "reboot_is_deferred_to_the_loop",
    "stamps_are_taken_when_made",
]


def test_every_unit_case_is_run_here(tmp_path: Path) -> None:
    assert run_mp("mp_units.py", str(SLOT), str(tmp_path), "--list").stdout.split() == CASES


@pytest.mark.parametrize("case", CASES)
def test_unit(case: str, tmp_path: Path) -> None:
    result = run_mp("mp_units.py", str(SLOT), str(tmp_path), case)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"ok {case}"
