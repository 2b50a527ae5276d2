"""Shared by the Pi bundle tests: a real install.sh run into a scratch root, and reading a lock."""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

LOCK_LINE = re.compile(r"^(?P<name>[a-z0-9-]+)==(?P<version>\S+) --hash=sha256:(?P<sha256>[0-9a-f]{64})$")


def install(bundle: Path, root: Path, *, skip_pip: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The bundle's own install.sh with IOC_EDGE_ROOT=root (no users, no systemd); with the real pip
    unless `skip_pip` (layout checks only)."""
    run_env = {**(env if env is not None else os.environ), "IOC_EDGE_ROOT": str(root),
               "IOC_EDGE_PYTHON": sys.executable}
    if skip_pip:
        run_env["IOC_EDGE_SKIP_PIP"] = "1"
    return subprocess.run(["sh", str(bundle / "install.sh")], env=run_env, capture_output=True, text=True,
                          timeout=300)


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, sha256); every line that is not a comment must be a pinned, hashed one."""
    locked: dict[str, tuple[str, str]] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = LOCK_LINE.match(line)
        assert match, f"not a pinned, hashed lock line: {line!r}"
        assert match["name"] not in locked, f"{match['name']} locked twice"
        locked[match["name"]] = (match["version"], match["sha256"])
    return locked


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheel_name(path: Path) -> str:
    return re.sub(r"[-_.]+", "-", path.name.split("-")[0]).lower()


def installed_venv(root: Path) -> Path:
    return (root / "opt/ioc-edge/current").resolve()
