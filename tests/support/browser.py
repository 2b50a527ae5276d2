"""Headless Chromium (Debian's `chromium`) for looking at pages the way a person would."""

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    return path


def _run(url: str, extra: list[str]) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=90, check=True)


def dump_dom(url: str) -> str:
    """The page's DOM after Chromium loaded it."""
    return _run(url, ["--dump-dom"]).stdout


def screenshot(url: str, path: Path, *, width: int = 1280, height: int = 720) -> Path:
    _run(url, [f"--screenshot={path}", f"--window-size={width},{height}"])
    if not path.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {path}")
    return path
