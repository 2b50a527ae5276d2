"""Writing MicroPython onto a blank ESP32 through its ROM bootloader, with esptool's library.

Called once `provision flash` found no MicroPython REPL on a port. esptool speaks to the chip's
ROM (no flasher stub: `--no-stub`, the plain ROM protocol, which the ESP32 ROM has for every step
we need): SYNC after the reset into download mode, chip detection (READ_REG of the magic value, or
GET_SECURITY_INFO on later chips), SPI_ATTACH, the flash id (flash size), FLASH_BEGIN (the ROM
erases the region it is about to write), FLASH_DATA blocks, SPI_FLASH_MD5 against the image's MD5
(esptool's own verify), and a reset into the new image.

Errors become ours (provisioning.errors): no answer -> NoBootloader, another chip -> WrongChip,
too little flash -> FlashTooSmall, an MD5 that differs -> FlashVerifyFailed, silence in the middle
-> BoardStoppedAnswering. esptool's own output is kept off the console; its last lines go into
the error message.
"""

from __future__ import annotations

import contextlib
import errno
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import serial
from esp_pylib.logger import EspLog
from esptool import cmds
from esptool.loader import ESPLoader
from esptool.logger import TemplateLogger, log
from esptool.util import FatalError

from provisioning.errors import (
    BoardStoppedAnswering,
    FlashTooSmall,
    FlashVerifyFailed,
    NoBootloader,
    ProvisionError,
    WrongChip,
)
from provisioning.micropython_image import MicroPythonImage, parse_size

ROM_BAUD = 115200  # the ROM's auto-baud starts here
Advance = Callable[[int], None]


class _Log(TemplateLogger):
    """esptool's output: the last lines kept for an error message; its progress bar drives ours."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=12)
        self.advance: Advance | None = None
        self.total = 0
        self._done = 0

    def print(self, *args: Any, **kwargs: Any) -> None:
        text = " ".join(str(a) for a in args).strip()
        if text:
            self.lines.append(text)

    def note(self, message: str) -> None:
        self.print(message)

    def warning(self, message: str) -> None:
        self.print(message)

    def error(self, message: str) -> None:
        self.print(message)

    def stage(self, finish: bool = False) -> None:
        pass

    def set_verbosity(self, verbosity: str) -> None:
        pass

    def progress_bar(self, cur_iter: int, total_iters: int, prefix: str = "", suffix: str = "",
                     bar_length: int = 30) -> None:
        if self.advance is None or total_iters <= 0:
            return
        done = self.total * min(cur_iter, total_iters) // total_iters
        if done > self._done:  # a rewrite after a failed verify does not move the bar back
            self.advance(done - self._done)
            self._done = done

    def last(self) -> str:
        return self.lines[-1] if self.lines else ""


@contextlib.contextmanager
def _esptool_log() -> Iterator[_Log]:
    previous = EspLog.instance
    ours = _Log()
    log.set_logger(ours)
    try:
        yield ours
    finally:
        EspLog.instance = previous


def has_modem_lines(port: str) -> bool:
    """Whether DTR/RTS can be driven (a USB bridge's auto-reset); a pty or a bare UART cannot."""
    try:
        probe = serial.Serial(port, exclusive=True)
    except serial.SerialException:
        return True  # let esptool open it and say what is wrong
    try:
        probe.dtr = probe.dtr
        return True
    except OSError as err:
        if err.errno in (errno.ENOTTY, errno.EINVAL):
            return False
        raise
    finally:
        probe.close()


def chip_name(loader: ESPLoader) -> str:
    """esptool's CHIP_NAME as its --chip spelling: 'ESP32-S3' -> 'esp32s3'."""
    return str(loader.CHIP_NAME).lower().replace("-", "")


@dataclass(frozen=True)
class RomWrite:
    chip: str
    flash_size: int | None
    written: int
    md5_checked: bool


class BlankBoardWriter:
    """One blank board's session: connect to its ROM, check, write, verify, reset."""

    def __init__(self, port: str, *, baud: int = 460800, connect_attempts: int = 3) -> None:
        self.port = port
        self.baud = baud
        self.connect_attempts = connect_attempts
        self.auto_reset = has_modem_lines(port)
        self._loader: ESPLoader | None = None
        self._log = _Log()

    def __enter__(self) -> BlankBoardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loader is not None:
            with contextlib.suppress(Exception):
                self._loader._port.close()
            self._loader = None

    def connect(self) -> str:
        """SYNC with the ROM after the reset into download mode; the chip's esptool name."""
        mode = "default-reset" if self.auto_reset else "no-reset"
        with _esptool_log() as out:
            try:
                self._loader = cmds.detect_chip(self.port, ROM_BAUD, mode, connect_attempts=self.connect_attempts)
            except (FatalError, serial.SerialException, OSError) as err:
                raise NoBootloader(
                    "no ESP32 ROM bootloader answers either "
                    + ("(after the reset into download mode; " if self.auto_reset else
                       "(this port cannot reset the board: hold BOOT while plugging it in; ")
                    + f"esptool: {_first_line(err)})") from err
            self._log.lines.extend(out.lines)
        return chip_name(self._loader)

    def check(self, image: MicroPythonImage, data: bytes) -> int | None:
        """The chip is the image's and its flash holds it; the flash size (None: unknown)."""
        loader = self._connected()
        chip = chip_name(loader)
        if chip != image.chip:
            raise WrongChip(f"{self.port}: the board is an {loader.CHIP_NAME}, the MicroPython image "
                            f"{image.name} is for {image.chip}: nothing was written")
        with self._esptool("reading the flash size"):
            cmds.attach_flash(loader)
            detected = cmds.detect_flash_size(loader)
        size = parse_size(detected) if detected else None
        needed = max(image.flash_size, image.offset + len(data))
        if size is not None and size < needed:
            raise FlashTooSmall(f"{self.port}: the board has {detected} of flash, the MicroPython image "
                                f"{image.name} needs {needed >> 20 if needed >= 1 << 20 else needed} "
                                f"{'MB' if needed >= 1 << 20 else 'bytes'}: nothing was written")
        return size

    def write(self, image: MicroPythonImage, data: bytes, advance: Advance | None = None) -> RomWrite:
        """Erase (the region: the ROM's FLASH_BEGIN), write, verify (MD5), reset into the image."""
        loader = self._connected()
        self._log.advance, self._log.total = advance, len(data)
        with self._esptool("writing MicroPython"):
            if self.baud != ROM_BAUD:
                loader.change_baud(self.baud)
            # force: the chip, the flash size and the SHA-256 were checked above against the
            # manifest; esptool's own image check would also read the header's chip revision
            cmds.write_flash(loader, [(image.offset, data)], force=True, no_compress=True)
        verified = any(line.startswith("Hash of data verified") for line in self._log.lines)
        if not verified:
            raise FlashVerifyFailed(f"{self.port}: esptool could not check the written flash's MD5 "
                                    f"({self._log.last()}); the board is not usable: run the same command again")
        with self._esptool("resetting into MicroPython"):
            if self.auto_reset:
                loader.hard_reset()
            else:
                loader.soft_reset(False)  # the ROM's "run user code": leave the loader, boot the flash
        self.close()
        return RomWrite(chip_name(loader), None, len(data), verified)

    def _connected(self) -> ESPLoader:
        if self._loader is None:
            raise ProvisionError(f"{self.port}: not connected to the ROM bootloader")
        return self._loader

    @contextlib.contextmanager
    def _esptool(self, doing: str) -> Iterator[None]:
        previous = EspLog.instance
        log.set_logger(self._log)
        try:
            yield
        except FatalError as err:
            said = _first_line(err)
            if "MD5 of file does not match" in said or "written flash region is empty" in said:
                raise FlashVerifyFailed(f"{self.port}: the flash's MD5 after writing is not the image's "
                                        f"(esptool: {said}); the board is not usable: run the same command "
                                        "again") from err
            raise BoardStoppedAnswering(f"{self.port}: the ROM bootloader stopped answering while {doing} "
                                        f"(esptool: {said}); check the cable and run the same command again, "
                                        "which writes MicroPython again") from err
        except (serial.SerialException, OSError) as err:
            raise BoardStoppedAnswering(f"{self.port}: the board stopped answering while {doing} ({err}); "
                                        "check the cable and run the same command again") from err
        finally:
            EspLog.instance = previous


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
