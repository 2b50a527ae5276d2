"""The virtual ESP32: the real mpremote works with it over its pty path, as with a USB board."""

import subprocess
import sys
from pathlib import Path

from provisioning.virtual_board import VirtualBoard
from tests.support.wait import wait_for

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def mpremote(port: str, *args: str) -> str:
    proc = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def test_exec_cp_ls_cat(vboard: VirtualBoard, tmp_path: Path) -> None:
    assert "micropython" in mpremote(vboard.port, "exec", "import sys; print(sys.implementation.name)")
    local = tmp_path / "hello.py"
    local.write_text("GREETING = 'xin chào'\n")
    out = mpremote(vboard.port, "fs", "mkdir", ":lib", "+", "fs", "cp", str(local), ":lib/hello.py",
                   "+", "fs", "ls", ":lib", "+", "fs", "cat", ":lib/hello.py")
    assert "hello.py" in out and "xin chào" in out
    # the board's filesystem is the folder
    assert (vboard.board_dir / "lib" / "hello.py").read_text() == "GREETING = 'xin chào'\n"
    assert "xin chào" in mpremote(vboard.port, "exec", "import sys; sys.path.append('lib');"
                                                        " import hello; print(hello.GREETING)")


def test_soft_reset_restarts_the_interpreter(vboard: VirtualBoard) -> None:
    pid, before = vboard.pid, vboard.resets
    # one session: set a global, reset, and the global is gone (a fresh interpreter)
    out = mpremote(vboard.port, "exec", "marker = 7", "+", "resume", "exec", "print(marker)",
                   "+", "soft-reset", "+", "exec", "print('marker' in globals())")
    assert out.split() == ["7", "False"]
    assert vboard.pid != pid
    assert vboard.resets > before


def test_main_py_runs_after_a_friendly_reset(vboard: VirtualBoard, tmp_path: Path) -> None:
    main = tmp_path / "main.py"
    main.write_text("with open('booted.txt', 'a') as f:\n    f.write('boot\\n')\n")
    mpremote(vboard.port, "fs", "cp", str(main), ":main.py")
    # mpremote's own resets happen in raw mode, where a board skips main.py
    assert not (vboard.board_dir / "booted.txt").exists()
    # a reset from the friendly REPL (Ctrl-B, then Ctrl-D) boots main.py, as after power-on
    import serial

    with serial.Serial(vboard.port, timeout=1) as port:
        port.write(b"\r\x02")
        port.write(b"\x04")
        port.flush()
        wait_for(lambda: (vboard.board_dir / "booted.txt").exists(), what="main.py to run")
    # and a running main.py is interrupted by mpremote's Ctrl-C as on a board
    main.write_text("import time\nwhile True:\n    time.sleep_ms(20)\n")
    mpremote(vboard.port, "fs", "cp", str(main), ":main.py")
    vboard.power_cycle()
    assert "42" in mpremote(vboard.port, "exec", "print(6 * 7)")


def test_a_killed_board_stays_silent_until_power_cycled(vboard: VirtualBoard) -> None:
    mpremote(vboard.port, "exec", "print(1)")
    vboard.kill()
    assert vboard.wait_until(lambda: vboard.pid is None)
    assert not vboard.running
    vboard.power_cycle()
    assert "1" in mpremote(vboard.port, "exec", "print(1)")


def test_cli_entry_point(tmp_path: Path) -> None:
    link = tmp_path / "ttyCLI"
    proc = subprocess.Popen([sys.executable, "-m", "provisioning.virtual_board", "--dir", str(tmp_path / "fs"),
                             "--link", str(link)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert str(link) in proc.stdout.readline()
        assert "3" in mpremote(str(link), "exec", "print(1 + 2)")
    finally:
        proc.terminate()
        proc.wait(10)
    assert not link.exists()
