"""A virtual ESP32: the real MicroPython unix port behind a pseudo-terminal.

The board's filesystem is a folder (the interpreter's cwd). The "USB serial port" is the slave
side of a pty that lives as long as the board, optionally symlinked to a stable path, so the real
`mpremote` (and `provision flash`) talk to it over a real serial device path::

    with VirtualBoard(tmp / "esp", link=tmp / "ttyESP0") as board:
        subprocess.run(["mpremote", "connect", board.port, "exec", "print(1)"])

How it behaves like a board:

- The interpreter runs on its own pty (its controlling terminal), so a Ctrl-C byte from the host
  interrupts a running `main.py` as it would on a board, and the unix REPL offers the raw REPL
  that mpremote uses.
- A soft reset is the interpreter exiting (Ctrl-D in the raw REPL makes the unix port exit): the
  board prints "MPY: soft reboot" on the serial port and starts a new interpreter. After a reset
  asked for in raw-REPL mode it starts without main.py and re-enters the raw REPL (real boards
  skip main.py then); otherwise it boots `main.py` like a board that was reset.
- Blank (`blank=FakeRom(...)`): the board has no MicroPython yet. Its serial port answers as an
  ESP32 ROM bootloader in download mode (`provisioning.fake_rom`) until an image was written and
  the host asks the ROM to run it (FLASH_END "run user code"); then it boots as a MicroPython
  board (the unix port, without a main.py: its REPL), as a real board does after esptool.
- `kill()` stops the interpreter and does not restart it: a board that stopped answering.
  `cut_link_on(pattern)` pulls the cable when the host sends `pattern`: the serial port closes
  under the host and the interpreter dies. `power_cycle()` boots it again (on a new serial port
  at the same link path, if the cable was pulled).

CLI (for demos and trying mpremote by hand)::

    python -m provisioning.virtual_board --dir /tmp/esp --link /tmp/ttyESP0
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from provisioning.fake_rom import FakeRom, parse_flash_size
from provisioning.hostboard import MICROPYTHON

SOFT_REBOOT_BANNER = b"MPY: soft reboot\r\n"
CTRL_A, CTRL_B = 0x01, 0x02
# Exit codes after which the board boots main.py again (0: soft reset, 3: the firmware's reset());
# any other exit (a crash, a config error) leaves the board at its REPL, as an ESP32 whose
# main.py raised, so a broken firmware cannot make a tight restart loop.
REBOOT_CODES = (0, 3)


def _make_controlling_tty() -> None:  # runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    # A board answers Ctrl-C and dies with its cable. An ignored signal stays ignored across exec,
    # and launchers ignore some (`nohup`: SIGHUP; a shell's background job: SIGINT, SIGQUIT): the
    # interpreter would outlive its closed pty or not stop for `provision flash`'s Ctrl-C.
    for number in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


class VirtualBoard:
    """One virtual board; a context manager. Thread-safe for the calls tests make."""

    def __init__(self, board_dir: Path | str, *, link: Path | str | None = None,
                 heapsize: str = "64k", micropython: Path | str = MICROPYTHON,
                 blank: FakeRom | None = None) -> None:
        self.board_dir = Path(board_dir)
        self.link = Path(link) if link is not None else None
        self.heapsize = heapsize
        self.micropython = str(micropython)
        self.resets = 0  # interpreter restarts (soft resets and power cycles)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._proc: subprocess.Popen[bytes] | None = None
        self._child_fd: int | None = None  # master side of the interpreter's pty
        self._serial_fd: int | None = None  # master side of the serial port pty
        self._serial_slave: int | None = None
        self._raw_mode = False  # the host's last mode switch was Ctrl-A (raw REPL)
        self._restart = True
        self._closing = False
        self._wake_r, self._wake_w = os.pipe()
        self._relay: threading.Thread | None = None
        self._fail_after: int | None = None  # bytes from the host until the board dies
        self._cut_on: bytes | None = None  # the link is cut when the host sends this
        self._heard = b""  # the host's last bytes, to find `_cut_on` across reads
        self.link_cut = False
        self.port = ""
        self.rom = blank  # the fake ROM bootloader while the board is blank (kept after, for tests)
        self._in_rom = blank is not None
        self._boot_app = False
        if blank is not None:
            blank.on_run = self._rom_runs_app

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> VirtualBoard:
        self.board_dir.mkdir(parents=True, exist_ok=True)
        self._open_serial()
        if not self._in_rom:
            self._spawn(boot_main=True)
        self._relay = threading.Thread(target=self._run_relay, name=f"vboard-{self.board_dir.name}",
                                       daemon=True)
        self._relay.start()
        return self

    def _open_serial(self) -> None:
        """The USB serial port: a raw pty, linked at `link` if given."""
        master, slave = os.openpty()
        tty.setraw(slave)  # a UART: no echo, no line editing, bytes as they are
        # We keep the slave open so the master never sees EIO between two host sessions.
        os.set_blocking(master, False)
        self.port = os.ttyname(slave)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.port)
            self.port = str(self.link)
        with self._lock:
            self._serial_fd, self._serial_slave = master, slave
            self.link_cut = False

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._restart = False
        self._kill_child()
        os.write(self._wake_w, b"x")
        if self._relay is not None:
            self._relay.join(10)
        for fd in (self._serial_fd, self._serial_slave, self._child_fd, self._wake_r, self._wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._serial_fd = self._serial_slave = self._child_fd = None
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # what tests do to the board ----------------------------------------------------------
    def kill(self) -> None:
        """The board stops answering: its interpreter dies and is not started again."""
        with self._lock:
            self._restart = False
            if self._in_rom and self.rom is not None:
                self.rom.silent = True
        self._kill_child()

    def fail_after(self, nbytes: int) -> None:
        """Die (as `kill`) once `nbytes` more bytes have come from the host: a board that stops
        answering in the middle of a copy, at a reproducible point."""
        with self._lock:
            self._fail_after = nbytes

    def cut_link_on(self, pattern: bytes) -> None:
        """Pull the USB cable when the host sends `pattern` (e.g. the name of a file it starts to
        write): the serial port closes under the host and the board loses power. Its folder keeps
        whatever was written; boot it again with `power_cycle()` (or run it with
        `provisioning.hostboard.start_board`)."""
        with self._lock:
            self._cut_on = pattern
            self._heard = b""

    def power_cycle(self) -> None:
        """Unplug and plug in again: a fresh interpreter boots main.py (if there is one); a cut
        link is a new serial port (at the same `link` path)."""
        with self._lock:
            self._restart = False
        self._kill_child()
        self.wait_until(lambda: self._proc is None, timeout=10)
        if self.link_cut:
            self._open_serial()
        with self._lock:
            self._restart = True
            self._raw_mode = False
            self._spawn(boot_main=True)
            self._changed.notify_all()
        os.write(self._wake_w, b"x")

    @property
    def running(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc is not None else None

    def wait_until(self, condition: Callable[[], object], timeout: float = 10.0) -> bool:
        """Wait (without polling) until `condition()` holds after a board state change."""
        with self._changed:
            return bool(self._changed.wait_for(condition, timeout))

    # internals ---------------------------------------------------------------------------
    def _spawn(self, *, boot_main: bool) -> None:
        """Start an interpreter on a new pty. Called with the lock held (or before the relay)."""
        master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.ONLCR  # the REPL writes its own \r\n
        attrs[3] &= ~termios.ECHO  # the REPL echoes what it wants echoed
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        run_main = boot_main and (self.board_dir / "main.py").exists()
        argv = [self.micropython, "-X", f"heapsize={self.heapsize}"]
        argv += ["-i", "main.py"] if run_main else []
        try:
            self._proc = subprocess.Popen(argv, cwd=self.board_dir, stdin=slave, stdout=slave,
                                          stderr=slave, start_new_session=True,
                                          preexec_fn=_make_controlling_tty, close_fds=True)
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._child_fd = master
        if not boot_main:
            # Back to the raw REPL, as a board reset from raw mode comes back in it.
            os.set_blocking(master, True)
            os.write(master, b"\r\x01")
            os.set_blocking(master, False)

    def _kill_child(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def _child_gone(self) -> None:
        """The interpreter's pty closed: reap it and, unless stopped, soft-reboot."""
        with self._lock:
            proc, self._proc = self._proc, None
            if self._child_fd is not None:
                os.close(self._child_fd)
                self._child_fd = None
            code = proc.wait(10) if proc is not None else None
            if self._restart and not self._closing:
                self.resets += 1
                self._write_serial(SOFT_REBOOT_BANNER)
                if self._raw_mode:
                    self._spawn(boot_main=False)
                else:
                    self._spawn(boot_main=code in REBOOT_CODES)
            self._changed.notify_all()

    def _write_serial(self, data: bytes) -> None:
        """To the host. Like a UART nobody listens to, output that does not fit is lost."""
        if self._serial_fd is None:
            return
        with contextlib.suppress(BlockingIOError):
            os.write(self._serial_fd, data)

    def _write_child(self, data: bytes) -> None:
        fd = self._child_fd
        while data and fd is not None:
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                select.select([], [fd], [], 1.0)
            except OSError:
                return  # the interpreter is gone; the host's bytes are lost like on a reset

    def _run_relay(self) -> None:
        while True:
            with self._lock:
                if self._closing:
                    return
                serial_fd, child_fd = self._serial_fd, self._child_fd
            fds = [fd for fd in (serial_fd, child_fd, self._wake_r) if fd is not None]
            readable, _, _ = select.select(fds, [], [], 1.0)
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
            if serial_fd is not None and serial_fd in readable:
                try:
                    data = os.read(serial_fd, 4096)
                except (BlockingIOError, InterruptedError):
                    data = b""
                if data:
                    self._note_mode(data)
                    if self._count_down(len(data)):
                        self.kill()
                        continue
                    if self._cut_here(data):
                        self._cut_link()
                        continue
                    if self._in_rom:
                        self._feed_rom(data)
                        continue
                    self._write_child(data)
            if child_fd is not None and child_fd in readable:
                try:
                    out = os.read(child_fd, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as err:
                    if err.errno != errno.EIO:
                        raise
                    out = b""
                if out:
                    self._write_serial(out)
                else:
                    self._child_gone()

    def _feed_rom(self, data: bytes) -> None:
        assert self.rom is not None
        out = self.rom.feed(data)
        fd = self._serial_fd
        while out and fd is not None:  # the ROM's replies are small; the host reads them
            try:
                out = out[os.write(fd, out):]
            except BlockingIOError:
                select.select([], [fd], [], 1.0)
        with self._lock:
            if self._boot_app:
                self._boot_app = False
                self._in_rom = False
                self.resets += 1
                self._spawn(boot_main=True)
                self._changed.notify_all()

    def _rom_runs_app(self, rom: FakeRom) -> None:
        """FLASH_END "run user code": boot MicroPython if an image was written (else stay in the ROM,
        as a chip whose flash holds no valid image falls back to it)."""
        if rom.highest_written > 0:
            self._boot_app = True

    @property
    def blank(self) -> bool:
        """Still in the ROM bootloader (no MicroPython booted yet)."""
        return self._in_rom

    def _count_down(self, n: int) -> bool:
        with self._lock:
            if self._fail_after is None:
                return False
            self._fail_after -= n
            if self._fail_after > 0:
                return False
            self._fail_after = None
            return True

    def _cut_here(self, data: bytes) -> bool:
        with self._lock:
            if self._cut_on is None:
                return False
            heard = self._heard + data
            if self._cut_on not in heard:
                self._heard = heard[-len(self._cut_on):]
                return False
            self._cut_on = None
            return True

    def _cut_link(self) -> None:
        """The cable is gone: the board loses power and the host's port closes under it."""
        self.kill()
        with self._lock:
            fds, self._serial_fd, self._serial_slave = (self._serial_fd, self._serial_slave), None, None
            self.link_cut = True
            self._changed.notify_all()
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _note_mode(self, data: bytes) -> None:
        for byte in data:
            if byte == CTRL_A:
                self._raw_mode = True
            elif byte == CTRL_B:
                self._raw_mode = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provisioning.virtual_board",
                                     description="A virtual ESP32: MicroPython on a pseudo-terminal.")
    parser.add_argument("--dir", type=Path, required=True, help="the board's filesystem folder")
    parser.add_argument("--link", type=Path, help="a stable path for the serial port (a symlink)")
    parser.add_argument("--heapsize", default="64k", help="MicroPython heap (default 64k)")
    parser.add_argument("--blank", action="store_true",
                        help="a blank board: an ESP32 ROM bootloader answers until MicroPython is written")
    parser.add_argument("--chip", default="esp32", help="with --blank: the chip the ROM says it is (esp32, "
                        "esp8266, esp32s3)")
    parser.add_argument("--flash-size", default="4MB", help="with --blank: the flash size (1MB..16MB)")
    args = parser.parse_args(argv)
    rom = FakeRom(chip=args.chip, flash_size=parse_flash_size(args.flash_size)) if args.blank else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with VirtualBoard(args.dir, link=args.link, heapsize=args.heapsize, blank=rom) as board:
        what = f"blank {args.chip}, ROM bootloader" if rom is not None else "MicroPython"
        print(f"virtual board ({what}): serial port {board.port} (filesystem {args.dir}); Ctrl-C to stop",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
