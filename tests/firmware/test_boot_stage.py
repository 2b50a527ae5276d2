"""The boot stage (firmware/main.py): slots, failed-boot counting, fallback."""

import shutil
from collections.abc import Callable

from provisioning.hostboard import EXIT_CRASH
from tests.firmware.support import HostBoard, wait_upstream
from tests.support.mqtt_probe import Probe

Boards = Callable[..., HostBoard]
MAX_TRIES = 3


def break_slot(board: HostBoard, slot: str = "a") -> None:
    broken = "def main(boot):\n    raise RuntimeError('broken build')\n"
    (board.path / f"app_{slot}" / "app.py").write_text(broken)


def install_second_slot(board: HostBoard, fw: str) -> None:
    shutil.copytree(board.path / "app_a", board.path / "app_b")
    (board.path / "app_b" / "version.py").write_text(f'FW = "{fw}"\n')


def crash_once(board: HostBoard) -> None:
    board.start()
    assert board.wait_exit() == EXIT_CRASH
    assert "RuntimeError: broken build" in board.console()


def test_failed_boots_switch_to_the_other_slot(boards: Boards, device_id: str, probe: Probe) -> None:
    board = boards(device_id)
    install_second_slot(board, fw="0.1.0-b")
    break_slot(board, "a")
    for tries in range(1, MAX_TRIES + 1):
        crash_once(board)
        assert board.file("bootstate.json") == {"active": "a", "tries": tries, "failed": tries}
    board.start()
    birth = wait_upstream(probe, "birth")[0]
    assert birth["fw"] == "0.1.0-b"
    board.wait_console("boot marked good")
    assert board.file("bootstate.json") == {"active": "b", "tries": 0, "failed": 0}
    assert "boot: leaving slot a (failed boots or no app) for b" in board.console()


def test_without_a_good_other_slot_it_stays_and_keeps_counting(boards: Boards, device_id: str) -> None:
    board = boards(device_id)
    break_slot(board, "a")
    for _ in range(MAX_TRIES + 1):
        crash_once(board)
    assert board.file("bootstate.json") == {"active": "a", "tries": MAX_TRIES + 1, "failed": MAX_TRIES + 1}
    assert f"boot: slot a try {MAX_TRIES + 1}" in board.console()
    assert "leaving slot" not in board.console()


def test_a_healthy_boot_clears_the_count(boards: Boards, device_id: str, probe: Probe) -> None:
    board = boards(device_id)
    (board.path / "bootstate.json").write_text('{"active": "a", "tries": 2}')
    board.start()
    wait_upstream(probe, "health")
    board.wait_console("boot marked good")
    assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 0}


def test_an_empty_or_unreadable_slot_is_never_started(boards: Boards, device_id: str, probe: Probe) -> None:
    board = boards(device_id)
    (board.path / "bootstate.json").write_text('{"active": "b", "tries": 0}')  # app_b/ is not there
    board.start()
    assert wait_upstream(probe, "birth")[0]["fw"] == "0.1.0"
    board.wait_console("boot marked good")
    assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 0}
    assert "boot: leaving slot b (failed boots or no app) for a" in board.console()


def test_a_damaged_boot_state_starts_slot_a(boards: Boards, device_id: str, probe: Probe) -> None:
    board = boards(device_id)
    (board.path / "bootstate.json").write_text('{"active": ')  # power cut in an old firmware's write
    board.start()
    wait_upstream(probe, "birth")
    board.wait_console("boot marked good")
    assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 0}


def test_two_bad_slots_end_in_safe_mode_instead_of_swapping_forever(
    boards: Boards, device_id: str, probe: Probe
) -> None:
    # Both slots crash when their role starts (the sensor's serial port is not there).
    board = boards(device_id, roles=["sensor"], sds011_port="/nonexistent/tty")
    install_second_slot(board, fw="0.1.0-b")
    for _ in range(2 * MAX_TRIES):  # each slot gets its tries ...
        board.start()
        assert board.wait_exit() == EXIT_CRASH
    assert board.file("bootstate.json") == {"active": "b", "tries": MAX_TRIES, "failed": 2 * MAX_TRIES}
    board.start()  # ... then the boot stage stays on the last one, and the app starts safe
    birth = wait_upstream(probe, "birth")[0]
    assert (birth["fw"], birth["mode"], birth["roles"]) == ("0.1.0-b", "safe", [])
    assert wait_upstream(probe, "health")[0]["mode"] == "safe"
    board.wait_console(f"safe mode: {2 * MAX_TRIES} failed boots; roles off")
    assert board.console().count("leaving slot") == 1
    assert board.file("bootstate.json") == {"active": "b", "tries": MAX_TRIES, "failed": 2 * MAX_TRIES, "open": 1}
