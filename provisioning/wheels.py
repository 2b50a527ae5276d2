"""The wheels a Pi installs from, and the lock that pins each one to its SHA-256.

The bundle carries every wheel the edge agent needs, so the Pi installs with no index and no
network: `pip install --no-index --find-links wheels --require-hashes --no-deps -r requirements.lock`.
The hashes are computed here from the very files shipped; pip refuses any wheel that differs.

The edge agent is its own distribution (`ioc-edge`, pure Python, on `ioc-contract`), built here
from the source checkout (`contract/`, `edge/`, `VERSION`); each role that needs more than the
agent has an extra of the same name in edge/pyproject.toml (camera, sensor, speaker). `pip
download` resolves `ioc-edge[<the bundle's roles>]` for the target machine, binary wheels only;
the lock is that closure, and nothing of the fleet's is in it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import ProvisionError

EDGE_DISTRIBUTION = "ioc-edge"
# The source of the edge's wheels, as the checkout holds it (the edge's version is VERSION's).
EDGE_SOURCES = ("VERSION", "contract", "edge")
# pip can take a while on a slow index or a big wheel (OpenCV); this is only a deadline.
PIP_TIMEOUT_S = 900
_PLATFORM_TAG = re.compile(r"^[a-z][a-z0-9_]{2,80}$")
_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


@dataclass(frozen=True)
class WheelTarget:
    """The machine the wheels are for. Empty `platforms` and no `python_version`: this one."""

    platforms: tuple[str, ...] = ()  # pip platform tags, e.g. manylinux_2_36_aarch64
    python_version: str | None = None  # e.g. "3.11" (Raspberry Pi OS 12)
    find_links: Path | None = None  # a folder of wheels to take everything from, with no index

    def __post_init__(self) -> None:
        for platform in self.platforms:
            if not _PLATFORM_TAG.match(platform):
                raise ProvisionError("--platform: expected a pip platform tag such as manylinux_2_36_aarch64 "
                                     "or linux_armv7l")
        if self.python_version is not None and not _PYTHON_VERSION.match(self.python_version):
            raise ProvisionError("--python-version: expected X.Y, e.g. 3.11")
        if self.find_links is not None and not self.find_links.is_dir():
            raise ProvisionError(f"--wheels-from: {self.find_links} is not a folder")


@dataclass(frozen=True)
class LockedWheel:
    name: str  # normalised distribution name
    version: str
    file: str
    sha256: str

    @property
    def line(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def role_extras(roles: Iterable[str], edge_pyproject: Path) -> list[str]:
    """The extras of edge/pyproject.toml that the bundle's roles name (a role with no extra needs
    nothing beyond the agent)."""
    extras = tomllib.loads(edge_pyproject.read_text())["project"].get("optional-dependencies", {})
    return sorted({role for role in roles if role in extras})


def edge_requirement(roles: Iterable[str], project_root: Path) -> str:
    """`ioc-edge[extras]==VERSION`: what the Pi installs, for pip to resolve."""
    version = (project_root / "VERSION").read_text().strip()
    extras = role_extras(roles, project_root / "edge" / "pyproject.toml")
    return f"{EDGE_DISTRIBUTION}{'[' + ','.join(extras) + ']' if extras else ''}=={version}"


def _pip(args: Sequence[str], what: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise ProvisionError(f"{what}: pip did not finish within {PIP_TIMEOUT_S} s") from err
    if proc.returncode != 0:
        errors = [line.strip() for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
        reason = errors[0].removeprefix("ERROR:").strip() if errors else f"pip exited with status {proc.returncode}"
        raise ProvisionError(f"{what}: {reason}")


def _index_options(target: WheelTarget) -> list[str]:
    return ["--no-index", "--find-links", str(target.find_links)] if target.find_links else []


def download_closure(requirement: str, target: WheelTarget, local_wheels: Path, dest: Path) -> None:
    """`requirement` and everything it needs, as binary wheels for the target machine (a Pi must
    not compile anything); the project's own wheels come from `local_wheels`."""
    args = ["download", "--quiet", "--only-binary=:all:", "--dest", str(dest), "--find-links", str(local_wheels),
            *_index_options(target)]
    for platform in target.platforms:
        args += ["--platform", platform]
    if target.platforms or target.python_version:
        args += ["--implementation", "cp"]
    if target.python_version:
        args += ["--python-version", target.python_version]
    where = ", ".join(target.platforms) or "this machine"
    _pip([*args, requirement], f"cannot get the edge agent's dependencies as wheels for {where}")


def build_edge_wheels(project_root: Path, target: WheelTarget, dest: Path) -> None:
    """The contract's and the edge agent's wheels (pure Python), built from a copy of their source
    so the work tree stays clean. pip builds them in an isolated environment: hatchling comes from
    the index, or from `target.find_links`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite3*", "*.egg-info")
    with tempfile.TemporaryDirectory(prefix="ioc-edge-src-") as scratch:
        source = Path(scratch)
        for item in EDGE_SOURCES:
            path = project_root / item
            if path.is_dir():
                shutil.copytree(path, source / item, ignore=ignore)
            elif path.exists():
                shutil.copy2(path, source / item)
            else:
                raise ProvisionError(f"{path} is missing: pi-bundle builds the edge agent from a source checkout")
        _pip(["wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), *_index_options(target),
              str(source / "contract"), str(source / "edge")], "cannot build the edge agent's wheels")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lock_wheels(folder: Path) -> list[LockedWheel]:
    """One pinned, hashed line per wheel in `folder`; anything else there is a mistake."""
    locked: list[LockedWheel] = []
    for path in sorted(folder.iterdir()):
        match = _WHEEL_NAME.match(path.name)
        if not path.is_file() or match is None:
            raise ProvisionError(f"{path}: not a wheel; the wheels folder holds wheels only")
        locked.append(LockedWheel(normalise(match["name"]), match["version"], path.name, sha256_of(path)))
    names = [wheel.name for wheel in locked]
    if len(set(names)) != len(names):
        raise ProvisionError(f"{folder}: two wheels of the same distribution; build the bundle again")
    return locked


LOCK_HEADER = """\
# The edge agent's wheels, each pinned to the SHA-256 of the file shipped in wheels/.
# install.sh: pip install --no-index --find-links wheels --require-hashes --no-deps -r requirements.lock
# (--no-deps: this list is already the complete closure of ioc-edge and the extras of its roles.)
"""


def write_wheel_set(folder: Path, lock_path: Path, *, roles: Sequence[str], project_root: Path,
                    target: WheelTarget) -> list[LockedWheel]:
    """Fill `folder` with the edge agent's wheels and their dependencies; write the lock."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ioc-edge-wheels-") as built:
        build_edge_wheels(project_root, target, Path(built))
        download_closure(edge_requirement(roles, project_root), target, Path(built), folder)
    locked = lock_wheels(folder)
    lock_path.write_text(LOCK_HEADER + "".join(f"{wheel.line}\n" for wheel in locked))
    return locked
