"""The Pi's installer, the blocking parts (run in a worker thread or a subprocess): the install
layout, the download with HTTP Range resume, the delta, the artifact's check, the venv, the switch.

    <root>/versions/<version>.part/   artifact.tar being downloaded (resumed from its length), delta
    <root>/versions/<version>.new/    the venv being made; renamed to versions/<version> when whole
    <root>/versions/<version>/        a venv + artifact.tar (kept: the base of the next delta)
    <root>/current -> versions/<folder>

Every failure is an `InstallFailed(reason, msg)` with a refusal code of docs/ota.md.
"""

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tarfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, BinaryIO

from edge.backoff import Backoff
from edge.bspatch import PatchError, apply_patch
from edge.errors import EdgeError

ARTIFACT = "artifact.tar"
DELTA = "delta.bsdiff"
COMPLETE = ".complete"  # written last into a version folder (install.sh does the same)
LOCK = "requirements.lock"
CHUNK = 64 << 10
DOWNLOAD_ATTEMPTS = 5  # one file: the first try and 4 more, then `download`
DOWNLOAD_TIMEOUT_S = 30.0  # one connect, one read
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 16.0
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_WHEEL = re.compile(r"wheels/[A-Za-z0-9_.+-]{1,200}\.whl")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class InstallFailed(EdgeError):
    """An update that cannot go on: `reason` is a refusal code (docs/ota.md), `msg` says why."""

    def __init__(self, reason: str, msg: str) -> None:
        super().__init__(f"{reason}: {msg}")
        self.reason = reason
        self.msg = msg


class Stopped(EdgeError):
    """The agent is stopping: the worker gave up between two chunks (the .part file stays)."""


def is_no_space(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in NO_SPACE


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def folder_version(name: str) -> str:
    """The version a versions/ folder holds: `0.2.0`, or install.sh's `0.1.0-3fa2c81b90d4`."""
    return name.split("-", 1)[0]


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    @property
    def current(self) -> Path:
        return self.root / "current"

    def running_folder(self) -> str | None:
        """The folder under versions/ that `current` points at (None: no such link)."""
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        return Path(target).name

    def is_complete(self, folder: str) -> bool:
        path = self.versions / folder
        return (path / COMPLETE).is_file() and (path / "bin").is_dir()

    def switch(self, folder: str) -> None:
        """Point `current` at versions/<folder> atomically: a new link renamed over the old one."""
        new = self.root / "current.new"
        with contextlib.suppress(FileNotFoundError):
            new.unlink()
        os.symlink(f"versions/{folder}", new)
        os.replace(new, self.current)
        fsync_dir(self.root)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove every entry of versions/ not in `keep` (old versions, leftovers); the names removed."""
        removed: list[str] = []
        if not self.versions.is_dir():
            return removed
        for entry in sorted(self.versions.iterdir()):
            if entry.name in keep:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()  # a stray file, not a folder
            removed.append(entry.name)
        return removed


# -- download ---------------------------------------------------------------------------------


def _write_limited(response: Any, out: BinaryIO, have: int, size: int, stop: threading.Event,
                   on_bytes: Callable[[int], None]) -> int:
    while True:
        if stop.is_set():
            raise Stopped("stopping")
        block = response.read(CHUNK)
        if not block:
            return have
        if have + len(block) > size:
            raise InstallFailed("size_mismatch", "the server sends more bytes than the release signed")
        out.write(block)
        have += len(block)
        on_bytes(have)


def _expected_total(response: Any, have: int) -> tuple[int | None, bool]:
    """(the file's whole length as the server states it, whether it resumes at `have`)."""
    if response.status == 206:
        found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if found is None or int(found[1]) != have:
            return None, False
        return int(found[3]), True
    length = response.headers.get("Content-Length")
    return (int(length) if length and length.isdigit() else None), False


def download(url: str, dest: Path, size: int, *, stop: threading.Event,
             on_bytes: Callable[[int], None] = lambda _n: None, attempts: int = DOWNLOAD_ATTEMPTS,
             backoff: Backoff | None = None) -> None:
    """Fetch `url` into `dest` until it holds `size` bytes, resuming from what `dest` already holds
    with `Range: bytes=<len>-`. Never writes more than `size` bytes. InstallFailed `size_mismatch`
    when the server's file is longer or shorter than `size`, `download` after `attempts` failures
    (with backoff) or at once on a refusal (4xx), `no_space` on a full disk."""
    delays = backoff or Backoff(BACKOFF_MIN_S, BACKOFF_MAX_S)
    last = "no attempt"
    for attempt in range(attempts):
        if attempt:
            if stop.wait(delays.next_delay()):
                raise Stopped("stopping")
        have = dest.stat().st_size if dest.exists() else 0
        if have > size:
            dest.unlink()
            have = 0
        if have == size:
            return
        headers = {"Range": f"bytes={have}-"} if have else {}
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
                total, resumed = _expected_total(response, have)
                if total is not None and total != size:
                    raise InstallFailed("size_mismatch", f"the server's file is {total} bytes, signed: {size}")
                start = have if resumed else 0
                with dest.open("r+b" if resumed else "wb") as out:
                    out.seek(start)
                    out.truncate()
                    got = _write_limited(response, out, start, size, stop, on_bytes)
                    out.flush()
                    os.fsync(out.fileno())
            if got == size:
                return
            if total is None and got < size:  # the whole file, shorter than signed
                raise InstallFailed("size_mismatch", f"the server's file ends at {got} bytes, signed: {size}")
            last = f"the transfer ended at {got} of {size} bytes"
        except urllib.error.HTTPError as err:
            if err.code == 416:
                raise InstallFailed("size_mismatch", "the server's file is shorter than the part fetched") from err
            if 400 <= err.code < 500 and err.code not in (408, 429):
                raise InstallFailed("download", f"the server refused the download (HTTP {err.code})") from err
            last = f"HTTP {err.code}"
        except OSError as err:
            if is_no_space(err):
                raise InstallFailed("no_space", f"the disk is full ({dest.parent})") from err
            last = str(getattr(err, "reason", None) or err)[:120]
        except HTTPException as err:
            last = type(err).__name__
    raise InstallFailed("download", f"{attempts} attempts failed (last: {last})")


def check_file(path: Path, size: int, sha256: str) -> None:
    have = path.stat().st_size
    if have != size:
        raise InstallFailed("size_mismatch", f"the file is {have} bytes, the release signed {size}")
    if sha256_file(path) != sha256:
        with contextlib.suppress(OSError):
            path.unlink()  # never resumed from: a bad prefix would stay bad
        raise InstallFailed("hash_mismatch", "the file's SHA-256 is not the signed one")


def patch_file(base: Path, patch: Path, out: Path, size: int, sha256: str) -> bool:
    """Make `out` from `base` with a bsdiff4 patch; True when the result is the signed file."""
    digest = hashlib.sha256()
    try:
        with base.open("rb") as old, patch.open("rb") as diff, out.open("wb") as new:
            made = apply_patch(old, diff, new, max_size=size, on_bytes=digest.update)
            new.flush()
            os.fsync(new.fileno())
    except PatchError:
        made = -1
    except OSError as err:
        if is_no_space(err):
            raise InstallFailed("no_space", f"the disk is full ({out.parent})") from err
        made = -1
    if made == size and digest.hexdigest() == sha256:
        return True
    with contextlib.suppress(OSError):
        out.unlink()
    return False


# -- the venv -----------------------------------------------------------------------------------


def unpack(artifact: Path, into: Path) -> Path:
    """The artifact's `requirements.lock` and `wheels/*.whl` into `into` (nothing else is accepted:
    no links, no folders but wheels/, no other names); the lock's path."""
    if into.exists():
        shutil.rmtree(into)
    (into / "wheels").mkdir(parents=True)
    try:
        with tarfile.open(artifact, "r:") as tar:
            for member in tar:
                if member.isdir() and member.name.rstrip("/") == "wheels":
                    continue
                if not member.isfile() or not (member.name == LOCK or _WHEEL.fullmatch(member.name)):
                    raise InstallFailed("install", "the artifact holds more than wheels/*.whl and requirements.lock")
                source = tar.extractfile(member)
                if source is None:
                    raise InstallFailed("install", "the artifact has an unreadable member")
                with source, (into / member.name).open("wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
    except tarfile.TarError as err:
        raise InstallFailed("install", f"the artifact is not a tar file: {err}") from err
    except OSError as err:
        if is_no_space(err):
            raise InstallFailed("no_space", f"the disk is full ({into})") from err
        raise InstallFailed("install", f"cannot unpack the artifact: {err}") from err
    lock = into / LOCK
    if not lock.is_file():
        raise InstallFailed("install", "the artifact has no requirements.lock")
    return lock


def venv_commands(python: str, new: Path, unpacked: Path) -> list[list[str]]:
    """The two commands that make the venv: as install.sh does, offline, only the shipped wheels,
    each checked against its SHA-256 in the lock."""
    pip = [str(new / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input", "--no-cache-dir",
           "--disable-pip-version-check", "--no-index", "--find-links", str(unpacked / "wheels"),
           "--require-hashes", "--no-deps", "-r", str(unpacked / LOCK)]
    return [[python, "-m", "venv", str(new)], pip]


def pip_environment() -> dict[str, str]:
    """No pip settings of this machine (a Pi's /etc/pip.conf names piwheels; no index here)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "PIP_CONFIG_FILE": os.devnull, "LANG": "C.UTF-8"}


def retarget_scripts(venv: Path, made_at: Path, final: Path) -> None:
    """pip writes the venv's absolute path into each script's `#!` line: point those of a venv
    made at `made_at` (versions/<v>.new) at `final` (versions/<v>), where they will run (the venv
    itself has no other tie to its path that the agent needs)."""
    old_line = f"#!{made_at}/bin/".encode()
    new_line = f"#!{final}/bin/".encode()
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        with script.open("rb") as handle:
            head = handle.read(len(old_line))
        if head == old_line:
            data = script.read_bytes()
            script.write_bytes(new_line + data[len(old_line):])


def finish_version(layout: Layout, version: str, artifact: Path) -> None:
    """The venv in versions/<v>.new is whole: keep the artifact in it, mark it, make it
    versions/<v> (one rename, after everything is on the disk)."""
    new = layout.versions / f"{version}.new"
    dest = layout.versions / version
    retarget_scripts(new, new, dest)
    os.replace(artifact, new / ARTIFACT)
    (new / COMPLETE).write_text(version + "\n")
    os.sync()  # the venv's files too: a power cut after the rename must not leave a torn venv
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(new, dest)
    fsync_dir(layout.versions)


def clean(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)

