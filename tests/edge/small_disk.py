"""A small tmpfs to fill to the last byte: the state folder of the full-disk tests (needs root)."""

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# A few MB: SQLite's write-ahead log alone grows to 4 MB before it is reused.
SIZE = "16m"


@contextlib.contextmanager
def small_disk(folder: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted on `folder` (made here), unmounted on leaving. Without root it skips on
    a developer's machine; in CI (CI=true, run as root) it fails, as any missing service does."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        why = f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path, name: str = "filler") -> int:
    """Write zeros to `name` until the file system refuses a single byte; the bytes free after."""
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            chunk = bytes(size)
            while True:
                try:
                    if os.write(fd, chunk) < size:
                        break
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return shutil.disk_usage(folder).free


def unfill(folder: Path) -> None:
    for filler in folder.glob("filler*"):
        filler.unlink()
