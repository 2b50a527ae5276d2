"""Small JSON files in the state folder, replaced atomically, and the folder's lock.

The state folder (`/var/lib/ioc-edge` on a Pi) outlives code versions: the session counter, the
desired-state document, the recent command results and the store-and-forward queue live there.
"""

import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from edge.errors import StateError

log = logging.getLogger(__name__)


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


def write_json(path: Path, value: Any) -> None:
    """Replace the file atomically: after a crash or power cut it holds the old or the new value."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w") as file:
            json.dump(value, file, separators=(",", ":"))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        raise StateError(f"cannot write {path}: {err}") from err


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
