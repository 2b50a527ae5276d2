"""Run the firmware on the host: a board is a folder holding a copy of `firmware/` plus its
config.json, and the real MicroPython unix port runs its boot stage with that folder as cwd.

Used by the firmware tests, the demo and (later) the virtual ESP32 of the provisioning
tests::

    board_dir = prepare_board(tmp / "esp-1", "esp-1", "127.0.0.1", 1883, health_period_s=5)
    proc = start_board(board_dir)          # console output goes to board_dir / "console.log"
    ...
    stop_board(proc)                       # Ctrl-C: the firmware publishes death "shutdown"
"""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from provisioning.firmware_build import compile_slot

# the firmware tree a board receives: package data in an installed ioc-provisioning, the
# repository's firmware/ in a source checkout
_PACKAGED = Path(__file__).resolve().parent / "firmware"
FIRMWARE_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "firmware"
MICROPYTHON = Path(sys.executable).with_name("micropython")
CONSOLE = "console.log"
CA_FILE = "ca.der"  # the CAs the board trusts (firmware/app_a/trust.py)
OTA_KEYS = "ota_keys.json"  # the release keys the board trusts (docs/ota.md)
EXIT_REBOOT = 3  # the host HAL's reset(): start the board again to "reboot" it
EXIT_CRASH = 70  # the boot stage: the app raised (an ESP32 would reset)
EXIT_CONFIG = 2  # the app refused its config.json


def prepare_board(dest_dir: Path | str, device_id: str, broker_host: str, broker_port: int, *,
                  precompiled: bool = True, ca_der: bytes | None = None, ota_keys: bytes | None = None,
                  **cfg: Any) -> Path:
    """Copy the firmware into `dest_dir` (the board's filesystem) and write its config.json.

    `precompiled`: the app slot as `.mpy` (mpy-cross), as `provision flash` writes it; compiling
    the sources on a 64 KB board takes more heap than running them. `ca_der`: the CA
    certificate(s) the board trusts (ca.der, DER): the board then speaks TLS to its broker and
    fleet. Without it this host harness, which runs on loopback, writes the lab-network flag
    `insecure_plaintext: true` (unless `cfg` says otherwise). `ota_keys`: the trust list
    (ota_keys.json, docs/ota.md) written at the board's root. Extra keyword arguments become
    config.json fields (see docs/firmware.md). Existing state files in `dest_dir` (state.json,
    desired.json, bootstate.json) are kept, like on a board that is flashed again.
    """
    board = Path(dest_dir)
    if (board / "app_a").exists():
        shutil.rmtree(board / "app_a")  # no stale modules from an earlier image
    shutil.copytree(FIRMWARE_DIR, board, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if precompiled:
        compile_slot(board / "app_a")
    if ota_keys is not None:
        (board / OTA_KEYS).write_bytes(ota_keys)
    if ca_der is not None:
        (board / CA_FILE).write_bytes(ca_der)
    else:
        cfg.setdefault("insecure_plaintext", True)
    config = {"device_id": device_id, "broker_host": broker_host, "broker_port": broker_port, **cfg}
    (board / "config.json").write_text(json.dumps(config, indent=1))
    return board


def start_board(board_dir: Path | str, heapsize: str = "64k", *,
                new_session: bool = False) -> subprocess.Popen[bytes]:
    """Boot the board: `micropython -X heapsize=<heapsize> main.py` in `board_dir`.

    stdout and stderr are appended to `board_dir/console.log`. The process exits with
    EXIT_REBOOT when the firmware resets itself; the caller decides whether to start it again.
    """
    board = Path(board_dir)
    with (board / CONSOLE).open("ab") as console:
        return subprocess.Popen([str(MICROPYTHON), "-X", f"heapsize={heapsize}", "main.py"],
                                cwd=board, stdout=console, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=new_session,
                                preexec_fn=_answer_sigint)


def _answer_sigint() -> None:  # in the child between fork and exec
    """The signals a board obeys back to their defaults. An ignored signal stays ignored across
    exec, and launchers ignore some (`nohup`: SIGHUP; a shell's background job: SIGINT): the board
    would never stop cleanly (stop_board's SIGINT)."""
    for number in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


def stop_board(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Stop cleanly (SIGINT, as Ctrl-C on a board's console); kill if it does not stop in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def console_text(board_dir: Path | str) -> str:
    path = Path(board_dir) / CONSOLE
    return path.read_text(errors="replace") if path.exists() else ""
