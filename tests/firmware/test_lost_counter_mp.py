"""The firmware's stream counter when state.json is lost, and the birth's prev, under MicroPython (issue 9)."""

from pathlib import Path

import pytest

from tests.firmware.support import SLOT, run_mp

CASES = [
    "a_damaged_state_json_restarts_too",
    "a_kept_counter_counts_on",
    "a_missing_state_json_restarts_at_a_random_48_bit_value",
    "the_birth_says_where_the_stream_before_ended",
]


def test_every_case_is_run_here(tmp_path: Path) -> None:
    assert run_mp("mp_lost_counter.py", str(SLOT), str(tmp_path), "--list").stdout.split() == CASES


@pytest.mark.parametrize("case", CASES)
def test_unit(case: str, tmp_path: Path) -> None:
    result = run_mp("mp_lost_counter.py", str(SLOT), str(tmp_path), case)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"ok {case}"
