"""Talking to a board: the `BoardLink` interface and its serial implementation (mpremote).

Everything that can go wrong on the wire is translated here into the package's errors, so the
layers above see `PortNotFound`, `PortBusy`, `NotMicroPython` or `BoardStoppedAnswering` and
never a pyserial or mpremote exception.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from provisioning.errors import (
    BoardStoppedAnswering,
    NotMicroPython,
    PortBusy,
    PortNotFound,
    ProvisionError,
)

Progress = Callable[[int], None]  # bytes just written

IDENTIFY = (
    "import sys\n"
    "print(repr((sys.implementation.name, tuple(sys.implementation.version), sys.platform,"
    " getattr(sys.implementation, '_machine', ''))))"
)


@dataclass(frozen=True)
class BoardInfo:
    implementation: str
    version: str
    platform: str
    machine: str

    def describe(self) -> str:
        return f"MicroPython {self.version} on {self.machine or self.platform}"


class BoardLink(Protocol):
    """What provisioning needs from a board, whatever carries the bytes."""

    port: str

    def identify(self) -> BoardInfo: ...
    def run(self, code: str) -> str: ...
    def read_file(self, path: str) -> bytes | None: ...
    def write_file(self, path: str, data: bytes, progress: Progress | None = None) -> None: ...
    def reset(self) -> None: ...
    def close(self) -> None: ...


class _Transport(SerialTransport):  # type: ignore[misc]
    """mpremote's serial transport with a bounded wait for every answer (mpremote waits 10 s)."""

    answer_timeout: float = 5.0

    def exec_raw(self, command: Any, timeout: float = 10, data_consumer: Any = None) -> Any:
        return super().exec_raw(command, timeout=min(timeout, self.answer_timeout),
                                data_consumer=data_consumer)


def _check_port(port: str) -> None:
    """Open the port once ourselves: pyserial's errno tells missing, busy and forbidden apart."""
    if not os.path.exists(port):
        raise PortNotFound(f"{port}: no such serial port (see `provision ports`)")
    try:
        probe = serial.Serial(port, exclusive=True)
    except serial.SerialException as err:
        code = err.errno
        if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            raise PortBusy(f"{port}: the port is in use by another program "
                           "(close any serial monitor, mpremote or IDE using it)") from err
        if code == errno.EACCES:
            raise ProvisionError(f"{port}: permission denied (add your user to the 'dialout' group)") from err
        if code in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
            raise PortNotFound(f"{port}: no such serial port (see `provision ports`)") from err
        raise ProvisionError(f"{port}: cannot open the port: {err.strerror or err}") from err
    probe.close()


class SerialBoard:
    """A MicroPython board on a serial port, driven through mpremote's raw REPL."""

    def __init__(self, port: str, *, answer_timeout: float = 5.0, chunk_size: int = 1024) -> None:
        self.port = port
        self.chunk_size = chunk_size
        _check_port(port)
        try:
            with self._quiet():
                self._transport = _Transport(port, timeout=answer_timeout)
        except TransportError as err:
            raise PortBusy(f"{port}: cannot open the port ({err})") from err
        self._transport.answer_timeout = answer_timeout
        self._answer_timeout = answer_timeout
        self._in_raw = False

    @staticmethod
    @contextlib.contextmanager
    def _quiet() -> Iterator[io.StringIO]:
        """mpremote prints what it received when the raw REPL fails; keep it off the console."""
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink):
            yield sink

    @contextlib.contextmanager
    def _talking(self, doing: str) -> Iterator[None]:
        try:
            yield
        except TransportExecError as err:
            lines = err.error_output.strip().splitlines() or ["(no message)"]
            raise ProvisionError(f"{self.port}: the board failed while {doing}: {lines[-1]}") from err
        except (TransportError, serial.SerialException, OSError) as err:
            raise BoardStoppedAnswering(
                f"{self.port}: the board stopped answering while {doing} "
                "(check the cable; run the same command again to re-flash it cleanly)") from err

    def identify(self) -> BoardInfo:
        """Interrupt whatever runs, soft-reset into the raw REPL, and ask what it is."""
        for attempt in (1, 2):
            with self._quiet() as heard:
                try:
                    self._transport.enter_raw_repl(soft_reset=True, timeout_overall=self._answer_timeout)
                    break
                except (TransportError, serial.SerialException, OSError) as err:
                    said = heard.getvalue().strip()
                    if said not in ("", "b''") and attempt == 1:
                        # it answers: perhaps firmware still stopping (its last messages out, its
                        # goodbye to the broker) when the first wait ended; interrupt it once more
                        continue
                    what = "answers, but not like a MicroPython board" if said not in ("", "b''") \
                        else "does not answer"
                    last = said.replace("\r", "").splitlines()[-1][-120:] if said not in ("", "b''") else ""
                    raise NotMicroPython(
                        f"{self.port}: the device {what} (no MicroPython REPL; "
                        "is MicroPython installed, is it the right port?)"
                        + (f"; it said last: {last!r}" if last else "")) from err
        self._in_raw = True
        try:
            with self._quiet():
                out = self._transport.exec(IDENTIFY)
            name, version, platform, machine = ast.literal_eval(out.decode().strip())
        except (TransportError, serial.SerialException, OSError, ValueError, SyntaxError) as err:
            raise NotMicroPython(f"{self.port}: the device has a REPL but does not say what it is") from err
        if name != "micropython":
            raise NotMicroPython(f"{self.port}: the board runs {name}, not MicroPython")
        return BoardInfo(implementation=name, version=".".join(str(p) for p in version[:3]),
                         platform=platform, machine=machine)

    def run(self, code: str) -> str:
        with self._talking("running a command"), self._quiet():
            return bytes(self._transport.exec(code)).decode(errors="replace")

    def read_file(self, path: str) -> bytes | None:
        with self._talking(f"reading {path}"), self._quiet():
            if not self._transport.fs_exists(path):
                return None
            return bytes(self._transport.fs_readfile(path))

    def write_file(self, path: str, data: bytes, progress: Progress | None = None) -> None:
        done = 0

        def advance(written: int, total: int) -> None:
            nonlocal done
            if progress is not None:
                progress(written - done)
            done = written

        with self._talking(f"writing {path}"), self._quiet():
            self._transport.fs_writefile(path, data, chunk_size=self.chunk_size,
                                         progress_callback=advance)
            if not data and progress is not None:
                progress(0)

    def reset(self) -> None:
        """Soft reset in the friendly REPL: the board boots main.py, as after power-on."""
        with self._talking("resetting"):
            self._transport.exit_raw_repl()
            self._transport.serial.write(b"\x04")
            self._transport.serial.flush()
            self._in_raw = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._transport.close()
