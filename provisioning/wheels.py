"""The wheels a Pi installs from, and the lock that pins each one to its SHA-256.

The bundle carries every wheel the edge agent needs, so the Pi installs with no index and no
network: `pip install --no-index --find-links wheels --require-hashes --no-deps -r requirements.lock`.
The hashes are computed here from the very files shipped; pip refuses any wheel that differs.

The edge agent is its own distribution (`ioc-edge`, pure Python, on `ioc-contract`), built here
from the source checkout (`contract/`, `edge/`, `VERSION`); each role that needs more than the
agent has an extra of the same name in edge/pyproject.toml (camera, sensor, speaker). `pip
download` resolves `ioc-edge[<the bundle's roles>]` for the target machine, binary wheels only;
the lock is that closure, and nothing of the fleet's is in it.

A Pi is named by a target (`PI_TARGETS`: pi-arm64, pi-armv7): its Python version and the platform
tags its pip would accept. pip takes `--platform` literally (a `manylinux_2_36` tag does not bring
the older `manylinux_2_17` ones it implies), so a target lists every tag from its glibc down to the
oldest manylinux, as pip on that Pi would (docs/packaging.md, "The Pi's platforms").
"""

from __future__ import annotations

import hashlib
import platform as host_platform
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
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?"
                         r"-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$")
# manylinux_2_17 (alias manylinux2014) is the oldest manylinux tag an ARM wheel can carry (PEP 599)
_OLDEST_ARM_GLIBC_MINOR = 17


def manylinux_tags(arch: str, glibc: tuple[int, int]) -> tuple[str, ...]:
    """Every manylinux tag a machine with this glibc accepts, newest first, as pip on it would
    list them (packaging.tags): manylinux_2_<glibc>_<arch> down to manylinux_2_17, and the
    legacy alias manylinux2014 of the last."""
    major, minor = glibc
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, _OLDEST_ARM_GLIBC_MINOR - 1, -1)]
    return (*tags, f"manylinux2014_{arch}")


@dataclass(frozen=True)
class PiTarget:
    """A kind of Pi, named so a technician can pick it: the OS's Python and glibc, the CPU."""

    name: str
    description: str
    arch: str  # the wheels' platform tag suffix
    glibc: tuple[int, int]
    python_version: str
    machines: tuple[str, ...]  # `platform.machine()`/pointer size an installed Pi may report
    extra_platforms: tuple[str, ...] = ()

    @property
    def platforms(self) -> tuple[str, ...]:
        return (*manylinux_tags(self.arch, self.glibc), *self.extra_platforms)


PI_TARGETS: dict[str, PiTarget] = {target.name: target for target in (
    PiTarget("pi-arm64", "Raspberry Pi OS 12 (bookworm) 64-bit: Pi 3, 4, 5, Zero 2 W; glibc 2.36, CPython 3.11",
             arch="aarch64", glibc=(2, 36), python_version="3.11", machines=("aarch64/64",)),
    # The 32-bit OS runs armhf code on every Pi from the Pi 2 on; its kernel may be 64-bit (a Pi 4
    # or 5 then says aarch64 or armv8l for a 32-bit Python). PyPI accepts plain linux_armv7l
    # wheels too, and pip on such a Pi takes them. The Pi 1 and Zero (armv6) are not covered.
    PiTarget("pi-armv7", "Raspberry Pi OS 12 (bookworm) 32-bit: Pi 2, 3, 4, 5, Zero 2 W; glibc 2.36, CPython 3.11",
             arch="armv7l", glibc=(2, 36), python_version="3.11",
             machines=("armv7l/32", "armv8l/32", "aarch64/32"), extra_platforms=("linux_armv7l",)),
)}


def this_machine() -> str:
    """What install.sh compares with a target's `machines`: e.g. `x86_64/64`."""
    return f"{host_platform.machine()}/{64 if sys.maxsize > 2**32 else 32}"


@dataclass(frozen=True)
class WheelTarget:
    """The machine the wheels are for. Empty `platforms` and no `python_version`: this one."""

    platforms: tuple[str, ...] = ()  # pip platform tags, e.g. manylinux_2_36_aarch64
    python_version: str | None = None  # e.g. "3.11" (Raspberry Pi OS 12)
    find_links: Path | None = None  # a folder of wheels to take everything from, with no index
    pi: PiTarget | None = None  # a named target, which gave `platforms` and `python_version`

    @classmethod
    def named(cls, name: str, find_links: Path | None = None) -> WheelTarget:
        pi = PI_TARGETS.get(name)
        if pi is None:
            raise ProvisionError(f"--target {name}: no such target (known: {', '.join(PI_TARGETS)})")
        return cls(platforms=pi.platforms, python_version=pi.python_version, find_links=find_links, pi=pi)

    @property
    def label(self) -> str:
        """The target as the messages and the lock name it."""
        if self.pi is not None:
            return self.pi.name
        if not self.platforms:
            return "this machine"
        return ", ".join(self.platforms)

    @property
    def python(self) -> str:
        """The Python version the wheels are for: given, or this one's."""
        return self.python_version or f"{sys.version_info[0]}.{sys.version_info[1]}"

    @property
    def machines(self) -> tuple[str, ...]:
        """What the installing machine may report (see `this_machine`); empty: not known."""
        if self.pi is not None:
            return self.pi.machines
        return () if self.platforms else (this_machine(),)

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
    _pip([*args, requirement], f"cannot get the edge agent's dependencies as wheels for {target.label}")


def check_wheel_tags(folder: Path, target: WheelTarget) -> None:
    """Every wheel pip chose is for the target: pure Python, or one of its platform tags and its
    CPython (a wheel for another machine would only fail on the Pi, after the trip there)."""
    if not target.platforms:
        return
    accepted = {"any", *target.platforms}
    cpython = "cp" + target.python.replace(".", "")
    for path in sorted(folder.glob("*.whl")):
        match = _WHEEL_NAME.match(path.name)
        if match is None:
            continue  # lock_wheels refuses it
        fits_platform = bool(accepted & set(match["platform"].split(".")))
        abis = set(match["abi"].split("."))
        fits_python = bool(abis & {"none", "abi3", cpython})
        if not (fits_platform and fits_python):
            raise ProvisionError(f"{path.name} is not a wheel for {target.label} (Python {target.python}); "
                                 "pip's configuration on this machine may add a folder of wheels (find-links)")


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


def lock_header(target: WheelTarget) -> str:
    platforms = " ".join(target.platforms) or "this machine's"
    return LOCK_HEADER + f"# For {target.label}: CPython {target.python}, platform tags {platforms}.\n"


def write_wheel_set(folder: Path, lock_path: Path, *, roles: Sequence[str], project_root: Path,
                    target: WheelTarget) -> list[LockedWheel]:
    """Fill `folder` with the edge agent's wheels and their dependencies; write the lock."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ioc-edge-wheels-") as built:
        build_edge_wheels(project_root, target, Path(built))
        download_closure(edge_requirement(roles, project_root), target, Path(built), folder)
    check_wheel_tags(folder, target)
    locked = lock_wheels(folder)
    lock_path.write_text(lock_header(target) + "".join(f"{wheel.line}\n" for wheel in locked))
    return locked
