"""Re-flashing on the board's side, without a fleet: the identity and its state, and the switch.

The switch to the new files is one script on the board; a board that loses power in the middle
of it is put back by the next flash. Here it is cut at every step (the board's folder arranged as
the script leaves it after that many renames) and the real MicroPython undoes it.
"""

import json
import shutil
from pathlib import Path

from provisioning.board import SerialBoard
from provisioning.image import CA_FILE, CONFIG, MANIFEST
from provisioning.staging import IDENTITY_STATE, JOURNAL, OLD, REPLACED, STAGE, roll_back
from provisioning.virtual_board import VirtualBoard
from tests.provisioning.conftest import ANSWER_TIMEOUT, Run, run_provision

OFFLINE = ("--offline", "--enrollment-token", "ioc_test-token", "--broker", "127.0.0.1:1883",
           "--fleet", "http://fleet.example:8000", "--insecure-plaintext", "--answer-timeout", ANSWER_TIMEOUT)


def offline_flash(board: VirtualBoard, kind: str, *extra: str) -> Run:
    return run_provision("flash", "--port", board.port, "--kind", kind, "--site", "Chợ Đồng Xoài", *OFFLINE, *extra)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_identity_and_its_state_are_kept_unless_a_new_one_is_asked_for(vboard: VirtualBoard) -> None:
    first = offline_flash(vboard, "sim")
    assert first.code == 0, first.err
    device_id = first.out.split()[2]
    board = vboard.board_dir
    # what the firmware keeps for its identity (it waits for its enrollment here, so it writes none)
    planted = {"state.json": b'{"boots": 5, "ses": 1234}', "light.json": b'{"burn_s": 9}',
               "desired.json": b'{"version": 3}'}
    for name, data in planted.items():
        (board / name).write_bytes(data)

    again = offline_flash(vboard, "sim")
    assert again.code == 0, again.err
    assert again.out.split()[2] == device_id and "identity kept" in again.out
    assert json.loads((board / CONFIG).read_text())["device_id"] == device_id
    assert {name: (board / name).read_bytes() for name in planted} == planted

    refused = offline_flash(vboard, "light")
    assert refused.code == 1, refused.err
    assert (f"the board is {device_id}, a sim node; flashing it as light needs --new-identity (a new id) or "
            "--device-id (keep --kind sim to keep its id)") in refused.err
    assert "the board was not changed: its previous firmware and identity" in refused.err
    assert json.loads((board / CONFIG).read_text())["device_id"] == device_id

    changed = offline_flash(vboard, "light", "--new-identity")
    assert changed.code == 0, changed.err
    new_id = changed.out.split()[2]
    assert new_id.startswith("light-cho-dong-xoai-") and f"new identity (was {device_id})" in changed.out
    assert f"its previous identity {device_id} keeps its credentials in the fleet" in changed.out
    assert not any((board / name).exists() for name in planted)  # a new identity starts its own state
    assert not any((board / name).exists() for name in (STAGE, OLD, JOURNAL))


def test_an_interrupted_switch_is_undone_at_every_step(tmp_path: Path) -> None:
    before = tmp_path / "before"  # a flashed board, with a complete staged copy of the new firmware
    files = {"main.py": b"import time\nwhile True:\n    time.sleep(1)\n", "app_a/app.py": b"# old app\n",
             "app_a/roles/sim.py": b"# old sim\n", "bootstate.json": b'{"active": "a", "tries": 0}',
             CONFIG: b'{"device_id": "sim-x-0001"}', MANIFEST: b"{}", "state.json": b'{"ses": 7}',
             f"{STAGE}/app_a/app.mpy": b"new app", f"{STAGE}/{CONFIG}": b'{"device_id": "sim-x-0001", "new": 1}',
             f"{STAGE}/{CA_FILE}": b"new ca", f"{STAGE}/{MANIFEST}": b'{"new": 1}',
             f"{STAGE}/main.py": b"import time\nwhile True:\n    time.sleep(2)\n"}
    for name, data in files.items():
        (before / name).parent.mkdir(parents=True, exist_ok=True)
        (before / name).write_bytes(data)
    into = ["app_a", CONFIG, CA_FILE, MANIFEST, "main.py"]  # as Staging.switch orders them: main.py last
    out = [n for n in IDENTITY_STATE if n in into] + list(REPLACED)
    # the script's renames, in its order (main.py leaves first and comes back last)
    steps = [(n, f"{OLD}/{n}") for n in reversed(out) if (before / n).exists()]
    steps += [(f"{STAGE}/{n}", n) for n in into]
    previous = {k: v for k, v in tree(before).items() if not k.startswith(STAGE)}

    for done in range(len(steps) + 1):
        board_dir = tmp_path / f"cut-after-{done}"
        shutil.copytree(before, board_dir)
        (board_dir / JOURNAL).write_text(json.dumps({"in": into, "out": out}))
        (board_dir / OLD).mkdir()
        for source, target in steps[:done]:
            (board_dir / source).rename(board_dir / target)
        with VirtualBoard(board_dir, link=tmp_path / f"tty{done}") as vboard:
            link = SerialBoard(vboard.port, answer_timeout=float(ANSWER_TIMEOUT))
            try:
                link.identify()
                assert roll_back(link)
            finally:
                link.close()
        assert tree(board_dir) == previous, f"cut after {done} of {len(steps)} renames"
