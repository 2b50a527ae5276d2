"""A storm (issue 9 §1): 100 power cuts of a light board at random moments while its broker is
unreachable, then the broker comes back. The light program runs after every boot, no boot runs
in safe mode, and at the end the board connects, not in safe mode.

A power cut is a SIGKILL of the interpreter (no clean-up, no exception), at a random moment: a
third of them in the first 80 ms (the boot stage, start-up and their writes to flash), the rest
anywhere in the first 2 s, after the lamp was seen driven (so half of those boots were judged
good, boot_good_s being 1 s, and half were not). The figures are printed (pytest -s).

IOC_FIRMWARE_DIR=<a firmware/ folder> runs the same storm on another firmware (e.g. an archive
of an older commit) for a before/after count; the assertions then say what that firmware does."""

import json
import os
import random
import shutil
import time
from pathlib import Path

from provisioning.firmware_build import compile_slot
from tests.firmware.support import HostBoard, wait_upstream
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe
from tests.support.wait import wait_for

CUTS = 100
EARLY_S = 0.08  # the start-up: the boot stage, imports, state.json and bootstate.json written
LATE_S = 2.0  # boot_good_s is 1: half of the later cuts come before the judgement
TZ = 420
PLACE = {"lat": 11.535, "lon": 106.883, "tz_min": TZ}
PROGRAM = {"version": 1, "doc": {"light": {"failsafe": 70, "rules": [{"steps": [
    {"sun": "set", "off": -15, "level": 80}, {"at": "23:00", "level": 40}, {"sun": "rise", "off": 15, "level": 0}]}]}}}
EVENING = (20522 * 1440 + 20 * 60 - TZ) * 60_000  # 2026-03-10 20:00 in Đồng Xoài: the program says 80
LAMP = "800"


def install_firmware(board: HostBoard, firmware: Path) -> None:
    """Replace the board's boot stage and slot a by those of another firmware/ folder."""
    shutil.copy(firmware / "main.py", board.path / "main.py")
    shutil.rmtree(board.path / "app_a")
    shutil.copytree(firmware / "app_a", board.path / "app_a", ignore=shutil.ignore_patterns("__pycache__"))
    compile_slot(board.path / "app_a")


def test_100_power_cuts_with_the_broker_down_never_reach_safe_mode(tmp_path: Path, device_id: str) -> None:
    rng = random.Random(int(os.environ.get("IOC_CUT_SEED", "9")))
    broker = Mosquitto(tmp_path / "mosquitto")  # its port is chosen; nothing listens there yet
    board = HostBoard(tmp_path / device_id, device_id, broker.port, roles=["light"], **PLACE, boot_good_s=1)
    if os.environ.get("IOC_FIRMWARE_DIR"):
        install_firmware(board, Path(os.environ["IOC_FIRMWARE_DIR"]))
    (board.path / "desired.json").write_text(json.dumps(PROGRAM))  # the program, on flash
    board.set_clock(EVENING)
    lamp = board.path / "io" / "lamp"
    boots: list[dict] = []
    probe = None
    try:
        for _ in range(CUTS):
            lamp.unlink(missing_ok=True)  # dark while the power is off
            before = len(board.console())
            early = rng.random() < 1 / 3
            at = rng.uniform(0, EARLY_S if early else LATE_S)
            started = time.monotonic()
            board.start("68k")  # the light role's heap (tests/firmware/test_role_heap.py)
            if not early:  # the lamp (or safe mode) first: this boot's program ran before its cut
                wait_for(lambda b=before: board.io("lamp") or "safe mode:" in board.console()[b:] or not board.running,
                         what="the lamp driven or safe mode")
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            exited = board.proc.poll() if board.proc else None
            board.kill()
            out = board.console()[before:]
            boots.append({"early": early, "lamp": board.io("lamp"), "safe": "safe mode:" in out,
                          "good": "boot marked good" in out, "exited": exited})
        broker.start()  # the network is back
        probe = Probe(broker.port, f"ioc/v1/d/{device_id}/#")
        before = len(board.console())
        board.start("68k")
        birth = wait_upstream(probe, "birth", timeout=30)[0]
        health = wait_upstream(probe, "health", lambda m: m["ses"] == birth["ses"])[0]
        wait_for(lambda: board.io("lamp") or "safe mode:" in board.console()[before:], what="the lamp after the storm")
        final_lamp = board.io("lamp")
        final_safe = "safe mode:" in board.console()[before:]
        try:
            board.wait_console("boot marked good", count=sum(b["good"] for b in boots) + 1, timeout=10)
        except TimeoutError:
            pass  # said below
        late = [b for b in boots if not b["early"]]
        print(f"\npower cuts: {CUTS} (broker unreachable), boots: {CUTS + 1}; "
              f"safe-mode boots: {sum(b['safe'] for b in boots) + final_safe} of {CUTS + 1}; "
              f"cuts in the first {EARLY_S * 1000:.0f} ms: {CUTS - len(late)}; later cuts: {len(late)}, "
              f"lamp at {LAMP} before the cut: {sum(b['lamp'] == LAMP for b in late)}, "
              f"judged good before the cut: {sum(b['good'] for b in late)}; "
              f"boots that ended by themselves: {sum(b['exited'] is not None for b in boots)}; "
              f"after the storm: birth mode {birth.get('mode', 'normal')}, health mode "
              f"{health.get('mode', 'normal')}, lamp {final_lamp or 'dark'}; "
              f"bootstate {board.file('bootstate.json')}")
        assert not any(b["safe"] for b in boots) and not final_safe
        assert all(b["lamp"] == LAMP for b in late)  # the program ran after every boot that had time
        assert all(b["lamp"] in ("", LAMP) for b in boots)  # never another level (not the fail-safe)
        assert all(b["exited"] is None for b in boots)  # no boot crashed or restarted by itself
        assert "mode" not in birth and "mode" not in health and final_lamp == LAMP
        assert board.file("bootstate.json") == {"active": "a", "tries": 0, "failed": 0}  # judged good
    finally:
        board.kill()
        if probe is not None:
            probe.close()
        broker.kill()
