"""One version (docs/packaging.md): VERSION, read by every pyproject.toml and reported by the code
and the command-line tools of every part. The firmware's own version (firmware/app_a/version.py,
its `fw`) is the firmware's, a separate thing."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import edge
import fleet
from provisioning import cli as provisioning_cli

ROOT = Path(__file__).resolve().parents[2]
VERSION = (ROOT / "VERSION").read_text().strip()
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("distribution", ["ioc-contract", "ioc-edge", "ioc-fleet", "ioc-provisioning", "ioc-city"])
def test_every_part_is_installed_at_the_one_version(distribution: str) -> None:
    assert version(distribution) == VERSION, f"{distribution}: reinstall (make .venv/.installed) after VERSION changed"


def test_the_code_reports_the_one_version() -> None:
    assert edge.__version__ == fleet.__version__ == provisioning_cli.VERSION == VERSION


@pytest.mark.parametrize("tool", ["edge-agent", "fleet", "provision"])
def test_every_tool_says_the_one_version(tool: str) -> None:
    done = subprocess.run([str(BIN / tool), "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == f"{tool} {VERSION}"


def test_no_part_writes_a_version_of_its_own() -> None:
    for pyproject in ROOT.glob("*/pyproject.toml"):
        text = pyproject.read_text()
        assert 'dynamic = ["version"]' in text and 'path = "../VERSION"' in text, pyproject
    root = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in root and 'path = "VERSION"' in root
