"""Safe mode only for a slot that really crashes, and a way out of it by itself (device.py,
safe_mode.py): after `safe_retry_s` of stable safe mode the slot gets one more normal try; if it
crashes again the next boot is in safe mode at once and waits twice as long; once the cause is
gone the try is judged good and the board stays out. Each step is an event the fleet sees."""

import os
import pty
import tty
from collections.abc import Callable
from pathlib import Path

from provisioning.hostboard import EXIT_CRASH, EXIT_REBOOT
from tests.firmware.support import HostBoard, wait_upstream
from tests.support.mqtt_probe import Probe

Boards = Callable[..., HostBoard]
RETRY_S = 2  # safe_retry_s: the first wait; the second is 4 s


def safe_events(probe: Probe, count: int) -> list[dict]:
    return wait_upstream(probe, "event", lambda m: m["type"] == "safe_mode", count=count, timeout=20)


def test_a_crashing_slot_goes_safe_tries_again_by_itself_and_stays_out_once_the_cause_is_gone(
    boards: Boards, device_id: str, probe: Probe, tmp_path: Path
) -> None:
    # The sensor role crashes at start while its serial port is missing (a loose cable).
    port = tmp_path / device_id / "sds011"
    board = boards(device_id, roles=["sensor"], th_sensor=False, sds011_port=str(port), safe_retry_s=RETRY_S)
    for _ in range(3):
        board.start()
        assert board.wait_exit() == EXIT_CRASH
    assert board.file("bootstate.json") == {"active": "a", "tries": 3, "failed": 3}

    board.start()  # safe mode: no roles, so no crash; after RETRY_S it restarts for a try
    birth = wait_upstream(probe, "birth")[0]
    assert birth["mode"] == "safe" and birth["roles"] == []
    assert board.wait_exit(timeout=20) == EXIT_REBOOT
    first = safe_events(probe, 1)[0]
    assert (first["phase"], first["data"]) == ("start", {"failed": 3, "retries": 0, "retry_s": RETRY_S})
    assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 3, "back": 1, "ev": 4}

    board.start()  # the try: the port is still missing, it crashes ...
    assert board.wait_exit() == EXIT_CRASH
    board.start()  # ... and the next boot is in safe mode at once, waiting twice as long
    assert board.wait_exit(timeout=20) == EXIT_REBOOT
    second = safe_events(probe, 2)[1]
    assert (second["phase"], second["data"]) == ("start", {"failed": 4, "retries": 1, "retry_s": 2 * RETRY_S})
    assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 4, "back": 2, "ev": 6}

    master, slave = pty.openpty()  # the cable is back
    tty.setraw(slave)
    try:
        os.symlink(os.ttyname(slave), port)
        board.start()
        board.wait_console("boot marked good")
        end = safe_events(probe, 3)[2]
        assert (end["id"], end["phase"]) == (second["id"], "end")
        assert end["data"] == {"reason": "stable", "retries": 2, "after_s": 2 * RETRY_S}
        births = wait_upstream(probe, "birth", count=3)  # the safe boots' and this one's
        assert [b.get("mode") for b in births] == ["safe", "safe", None] and births[2]["roles"] == ["sensor"]
        assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 0}
        assert board.running
        assert board.console().count("fw: safe mode: ") == 2 + 2  # two safe boots, each entered and left
    finally:
        board.kill()
        os.close(master)
        os.close(slave)
