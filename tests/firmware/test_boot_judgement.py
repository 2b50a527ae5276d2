"""How a boot is judged (firmware/main.py, device.py): by what the board sees, not by the broker.

A boot is good once its roles ran `boot_good_s` (with or without a broker); it failed if the app
raised or the board reset itself (watchdog) before that; a power cut (SIGKILL of the interpreter)
or a restart the fleet asked for is not counted. bootstate.json survives damage."""

import json
import time
from collections.abc import Callable

from provisioning.hostboard import EXIT_REBOOT
from tests.firmware.support import HostBoard, wait_upstream
from tests.support.mosquitto import free_port
from tests.support.mqtt_probe import Probe

Boards = Callable[..., HostBoard]
NEVER = 3600  # boot_good_s: no boot of these tests lives long enough to be judged good


def boot_line(board: HostBoard, n: int) -> None:
    """Wait until the n-th boot of the board has made its Device (start.py's line)."""
    board.wait_console(r"fw: fw \S+ device \S+ boot \d+ reset", count=n)


def test_power_cuts_before_the_judgement_are_not_failed_boots(boards: Boards, device_id: str) -> None:
    board = boards(device_id, port=free_port(), boot_good_s=NEVER)  # no broker listens there
    for n in range(1, 7):
        board.start()
        boot_line(board, n)
        board.kill()  # the power goes: no clean-up, no exception
    board.start()
    boot_line(board, 7)
    assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 0, "open": 1}
    assert "safe mode" not in board.console()
    assert board.console().count("boot: slot a try 1") == 7


def test_a_board_without_a_broker_is_judged_good(boards: Boards, device_id: str) -> None:
    board = boards(device_id, port=free_port(), boot_good_s=1)
    (board.path / "bootstate.json").write_text('{"active": "a", "tries": 2, "failed": 2}')
    board.start()
    board.wait_console("boot marked good")
    assert "connect failed" in board.console()
    assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 0}


def test_a_watchdog_reset_before_the_judgement_is_a_failed_boot(boards: Boards, device_id: str) -> None:
    board = boards(device_id, port=free_port(), boot_good_s=NEVER, wdt_s=2)
    board.start()
    boot_line(board, 1)
    (board.path / ".hang").write_text("1")
    assert board.wait_exit(timeout=15) == -9  # the watchdog's reset
    (board.path / ".hang").unlink()
    board.start()
    board.wait_console("boot: slot a try 2")
    boot_line(board, 2)
    assert board.file("bootstate.json") == {"active": "a", "tries": 1, "failed": 1, "open": 1}


def test_a_reboot_the_fleet_asks_for_is_not_a_failed_boot(boards: Boards, device_id: str, probe: Probe) -> None:
    board = boards(device_id, boot_good_s=NEVER)
    (board.path / "bootstate.json").write_text('{"active": "a", "tries": 2, "failed": 2}')
    board.start()
    wait_upstream(probe, "birth")
    body = {"v": 1, "id": "r-1", "name": "reboot", "args": {}, "exp": time.time_ns() // 1_000_000 + 60_000}
    probe.publish(f"ioc/v1/d/{device_id}/cmd", json.dumps(body))
    assert board.wait_exit() == EXIT_REBOOT
    assert board.file("bootstate.json") == {"active": "a", "tries": 2, "failed": 2}  # closed, not counted


def test_a_damaged_boot_state_is_read_from_a_whole_tmp_or_starts_afresh(boards: Boards, device_id: str) -> None:
    board = boards(device_id, port=free_port(), boot_good_s=NEVER)
    state = board.path / "bootstate.json"
    # FAT: a cut after the old file was removed and before the new one was renamed in
    (board.path / "bootstate.json.tmp").write_text('{"active": "a", "tries": 2, "failed": 2}')
    board.start()
    boot_line(board, 1)
    board.kill()
    assert "boot: slot a try 3" in board.console()
    assert board.file("bootstate.json") == {"active": "a", "tries": 2, "failed": 2, "open": 1}
    damaged = ['{"active": "a", "tr', "[1, 2]", '{"active": "c", "tries": 1}', '{"active": "a", "tries": -4}',
               '{"active": "a", "tries": "2"}', '{"active": "a", "tries": 3, "failed": 1}', ""]
    for n, text in enumerate(damaged, start=2):
        state.write_text(text)
        (board.path / "bootstate.json.tmp").write_text(text)
        board.start()
        boot_line(board, n)
        board.kill()
        assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 0, "open": 1}, text
    assert board.console().count("boot: slot a try 1") == len(damaged)
