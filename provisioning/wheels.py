"""The wheels a Pi installs from, and the lock that pins each one to its SHA-256.

The bundle carries every wheel the edge agent needs, so the Pi installs with no index and no
network: `pip install --no-index --find-links wheels --require-hashes --no-deps -r requirements.lock`.
The hashes are computed here from the very files shipped; pip refuses any wheel that differs.

The whole project is one distribution today (`ioc-fleet`, with the fleet's web stack among its
declared dependencies), so its wheel is installed with `--no-deps` and the lock lists exactly the
dependencies the edge agent imports: `EDGE_DEPENDENCIES`, plus those of the roles the bundle names.
`pip download` resolves their own dependencies; the lock is that closure.
"""

from __future__ import annotations

import hashlib
import itertools
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

# What `edge-agent` imports on any Pi (edge/, fleet/contract/).
EDGE_DEPENDENCIES = ("aiomqtt", "paho-mqtt", "pydantic", "pydantic-settings", "psutil")
# What a role imports when a config names it (edge/roles/__init__.py imports roles lazily).
ROLE_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "sim": (),
    "hotspot": (),
    "camera": ("opencv-python-headless", "numpy"),
    "sensor": ("pyserial", "pymodbus"),
    "speaker": ("httpx",),
}
# The project's own source, as the wheel is built from it.
PROJECT_ITEMS = ("pyproject.toml", "README.md", "edge", "fleet", "provisioning")
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


def requirements_for(roles: Iterable[str], pyproject: Path) -> list[str]:
    """The edge's requirement strings, with the version bounds pyproject.toml declares for them."""
    wanted = [*EDGE_DEPENDENCIES]
    for role in roles:
        wanted += [dep for dep in ROLE_DEPENDENCIES[role] if dep not in wanted]
    declared: dict[str, str] = {}
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {}).values()
    for requirement in itertools.chain(project["dependencies"], *extras):
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            declared.setdefault(normalise(match.group(1)), requirement.split(";")[0].strip())
    return [declared.get(normalise(name), name) for name in wanted]


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


def download_dependencies(requirements: Sequence[str], target: WheelTarget, dest: Path) -> None:
    """Binary wheels only (a Pi must not compile anything), for the target machine."""
    args = ["download", "--quiet", "--only-binary=:all:", "--dest", str(dest), *_index_options(target)]
    for platform in target.platforms:
        args += ["--platform", platform]
    if target.platforms or target.python_version:
        args += ["--implementation", "cp"]
    if target.python_version:
        args += ["--python-version", target.python_version]
    where = ", ".join(target.platforms) or "this machine"
    _pip([*args, *requirements], f"cannot get the edge agent's dependencies as wheels for {where}")


def build_project_wheel(project_root: Path, target: WheelTarget, dest: Path) -> None:
    """The project's own wheel (pure Python), built from a copy of its source so the work tree stays
    clean. pip builds it in an isolated environment: setuptools comes from the index, or from
    `target.find_links`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite3*", "*.egg-info")
    with tempfile.TemporaryDirectory(prefix="ioc-edge-src-") as scratch:
        source = Path(scratch) / "src"
        source.mkdir()
        for item in PROJECT_ITEMS:
            path = project_root / item
            if path.is_dir():
                shutil.copytree(path, source / item, ignore=ignore)
            elif path.exists():
                shutil.copy2(path, source / item)
        _pip(["wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), *_index_options(target),
              str(source)], "cannot build the project's wheel")


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
# (--no-deps: this list is complete; the project's own wheel declares the fleet's dependencies too,
# which a Pi does not install.)
"""


def write_wheel_set(folder: Path, lock_path: Path, *, roles: Sequence[str], project_root: Path,
                    target: WheelTarget) -> list[LockedWheel]:
    """Fill `folder` with the project's wheel and the edge's dependencies; write the lock."""
    folder.mkdir(parents=True, exist_ok=True)
    download_dependencies(requirements_for(roles, project_root / "pyproject.toml"), target, folder)
    build_project_wheel(project_root, target, folder)
    locked = lock_wheels(folder)
    lock_path.write_text(LOCK_HEADER + "".join(f"{wheel.line}\n" for wheel in locked))
    return locked
