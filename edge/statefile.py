"""Small JSON files in the state folder, replaced atomically; the folder's lock; its free space.

The state folder (`/var/lib/ioc-edge` on a Pi) outlives code versions: the session counter, the
desired-state document, the recent command results and the store-and-forward queue live there.

A full file system is a state the agent lives through (`StateDisk`, docs/edge.md "A full disk"):
a pre-allocated reserve file is given back when a write fails, so the agent's own small files can
still be written, while the queue keeps new messages in memory until space returns.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.errors import StateError

log = logging.getLogger(__name__)

RESERVE_FILE = "space-reserve"
RESERVE_BYTES = 1 << 20  # 1 MiB: session.json, commands.json, desired.json and SQLite's -shm/-wal
# Free space, besides the reserve and what the queue says it needs, before the queue writes to
# its file again: the margin that keeps a disk at the edge from flapping between the two states.
RESUME_FREE_BYTES = 256 << 10
# At start, less than this free besides the reserve is a full file system.
LOW_WATER_BYTES = 64 << 10

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def read_json(path: Path, default: Any, *, if_corrupt: Any = None) -> Any:
    """The file's JSON value; `default` when the file does not exist.

    A file that is not JSON (a failing SD card) must not keep an unattended device down: it is
    renamed `<name>.corrupt-<time>` for a post-mortem, and `if_corrupt` is returned.
    """
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except ValueError as err:
        set_aside(path, str(err))
        return if_corrupt
    except OSError as err:
        raise StateError(f"cannot read {path}: {err.strerror or err}") from err


def set_aside(path: Path, why: str) -> Path:
    """Rename a damaged state file out of the way (keeping it) and log it."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    log.error("state file %s is damaged (%s); moved it to %s", path, why, aside)
    try:
        path.rename(aside)
    except OSError as err:
        raise StateError(f"cannot move damaged {path} aside: {err.strerror or err}") from err
    return aside


def write_json(path: Path, value: Any, *, in_place_when_full: bool = False) -> None:
    """Replace the file atomically: after a crash or power cut it holds the old or the new value.

    `in_place_when_full`: when the file system has no room for the new copy, overwrite the
    existing file in place instead, which needs no new block (ext4, tmpfs). A power cut during
    that write can leave the file damaged, and a damaged file is set aside at the next start
    (`read_json`); for the session counter that is safe, as a lost counter restarts above
    anything it used.
    """
    data = json.dumps(value, separators=(",", ":")).encode()
    try:
        _replace(path, data)
    except OSError as err:
        if in_place_when_full and err.errno in _NO_SPACE:
            try:
                _overwrite(path, data)
                return
            except OSError:
                pass
        raise StateError(f"cannot write {path}: {err}") from err


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):  # a partial copy would hold space for nothing
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _overwrite(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)  # never created here: only an existing file has blocks to reuse
    try:
        # Padded with spaces (JSON allows trailing white space) so the file never gets shorter and
        # no stale byte of a longer old value is left after the new one.
        padded = data.ljust(os.fstat(fd).st_size)
        if os.pwrite(fd, padded, 0) != len(padded):
            raise OSError(errno.ENOSPC, "short write")
        os.fsync(fd)
    finally:
        os.close(fd)


def describe_write_error(err: BaseException) -> str:
    """One line for a failed write: the OS or SQLite reason, without a traceback."""
    return str(err)[:200] or type(err).__name__


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process can still write on the file system of `folder`."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


class StateDisk:
    """Whether the agent can write its state folder, and the space it keeps back for its own state.

    `full` becomes true when a write in the folder fails (`write_failed`), or at start when the
    reserve cannot be made whole; the reserve is then deleted so the agent's small files can
    still be written. `room_to_resume` says when the file system has room again (the reserve,
    what the caller needs, and RESUME_FREE_BYTES) and takes the reserve back; the owner of what
    waited in memory stores it and calls `recovered`. One log line per change of state, none per
    failed write.
    """

    def __init__(self, folder: Path, *, name: str = "", reserve_bytes: int = RESERVE_BYTES) -> None:
        self.folder = folder
        self.reserve_path = folder / RESERVE_FILE
        self.reserve_bytes = reserve_bytes
        self._who = f"{name}: " if name else ""
        self.full = False
        self.error: str | None = None  # what failed, while full
        self.episodes = 0  # times it became full since this object was made
        # Called with the new state, after it changed (the agent reports it).
        self.on_change: Callable[[bool], None] | None = None

    def prepare(self) -> None:
        """At start: make the reserve whole; a file system without room for it (or with less than
        LOW_WATER_BYTES free besides it) is full from the start."""
        if not self.take_reserve():
            self.write_failed("start", f"cannot allocate the {self.reserve_bytes}-byte reserve")
            return
        free = self.free_bytes()
        if free < LOW_WATER_BYTES:
            self.write_failed("start", f"{free} bytes free")

    def free_bytes(self) -> int:
        try:
            return free_bytes(self.folder)
        except OSError:
            return 0

    def reserve_held(self) -> bool:
        if self.reserve_bytes <= 0:
            return True
        try:
            return self.reserve_path.stat().st_blocks * 512 >= self.reserve_bytes
        except OSError:
            return False

    def take_reserve(self) -> bool:
        """Allocate the reserve file (no-op when it is whole); False when there is no room."""
        if self.reserve_held():
            return True
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            os.posix_fallocate(fd, 0, self.reserve_bytes)
            return True
        except OSError:
            pass
        finally:
            os.close(fd)
        self.release_reserve()  # a partial reserve would hold space for nothing
        return False

    def release_reserve(self) -> None:
        with contextlib.suppress(OSError):
            self.reserve_path.unlink()

    def write_failed(self, what: str, reason: str) -> None:
        """A write in the state folder failed: enter the full state (once; later failures are silent)."""
        if self.full:
            return
        self.full = True
        self.error = f"{what}: {reason}"[:200]
        self.episodes += 1
        self.release_reserve()
        log.warning(
            "%sthe state folder %s cannot be written (%s); new messages wait in memory until space "
            "returns (%d bytes free now)",
            self._who,
            self.folder,
            self.error,
            self.free_bytes(),
        )
        if self.on_change is not None:
            self.on_change(True)

    def room_to_resume(self, needed: int = 0) -> bool:
        """True when there is room again: the reserve is taken back, and `needed` bytes plus
        RESUME_FREE_BYTES are left."""
        needed += RESUME_FREE_BYTES + (0 if self.reserve_held() else self.reserve_bytes)
        return self.free_bytes() >= needed and self.take_reserve()

    def recovered(self, detail: str) -> None:
        """What waited in memory is stored: leave the full state."""
        if not self.full:
            return
        self.full = False
        self.error = None
        log.info("%sthe state folder %s can be written again: %s", self._who, self.folder, detail)
        if self.on_change is not None:
            self.on_change(False)

    def save_json(self, path: Path, value: Any) -> bool:
        """`write_json`, with a failure entering the full state instead of raising; False then."""
        try:
            write_json(path, value)
        except StateError as err:
            self.write_failed(path.name, describe_write_error(err.__cause__ or err))
            return False
        return True


class StateDirLock:
    """An exclusive lock on the state folder, so two agents never share one session counter.

    The kernel drops the lock when the process dies, even by `kill -9`.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "agent.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise StateError(f"cannot use state folder {self.path.parent}: {err.strerror}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise StateError(f"state folder {self.path.parent} is in use by another agent") from err
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
