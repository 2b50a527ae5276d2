"""`provision pi-bundle`: the folder a Pi is installed from, read back with the agent's own loader.

TLS and plaintext: test_pi_bundle_tls.py; the wheels, the lock and a real install: test_pi_bundle_wheels.py.
"""

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_config
from tests.provisioning.conftest import ROOT, FleetUnderTest, arun_provision, run_provision
from tests.support.tls import make_tls

SITE = "Điểm phát wifi Quảng trường"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def staged_install(bundle: Path, root: Path) -> subprocess.CompletedProcess[str]:
    """install.sh into a scratch root: the real script, minus users, systemd and pip."""
    env = {**os.environ, "IOC_EDGE_ROOT": str(root), "IOC_EDGE_SKIP_PIP": "1", "IOC_EDGE_PYTHON": sys.executable}
    return subprocess.run(["sh", str(bundle / "install.sh")], env=env, capture_output=True, text=True, timeout=120)


def test_offline_bundle_files_and_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = make_tls(tmp_path / "tls")
    out = tmp_path / "usb" / "ioc-edge"
    result = run_provision("pi-bundle", "--out", str(out), "--site", SITE, "--role", "sim", "--offline",
                           "--enrollment-token", "ioc_pre-issued", "--broker", "10.0.0.5:8883",
                           "--ca-file", str(tls.ca), "--fleet", "https://10.0.0.5:8443")
    assert result.code == 0, result.err
    device_id = result.out.split()[1]
    assert device_id.startswith("pi-diem-phat-wifi-quang-truong-")
    assert mode(out / "credentials.env") == 0o600
    assert mode(out / "install.sh") == 0o755
    assert mode(out / "agent.toml") == 0o644
    assert mode(out / "ca.pem") == 0o644
    env = (out / "credentials.env").read_text()
    assert "IOC_ENROLLMENT_TOKEN=ioc_pre-issued\n" in env and f"IOC_DEVICE_ID={device_id}\n" in env

    config = load_config(out / "agent.toml")  # the agent's own loader accepts it
    assert config.device_id == device_id
    assert (config.broker.host, config.broker.port, config.broker.username) == ("10.0.0.5", 8883, device_id)
    assert config.broker.url == "mqtts://10.0.0.5:8883" and config.broker.ca_file == out / "ca.pem"
    assert config.broker.password is None and str(config.state_dir) == "/var/lib/ioc-edge"
    assert "sim" in config.roles
    assert config.fleet is not None  # the camera role's snapshot uploads go here, checked with the same CA
    assert config.fleet.url == "https://10.0.0.5:8443" and config.fleet.ca_file == out / "ca.pem"

    unit = (out / "ioc-edge.service").read_text()
    assert "ExecStart=/opt/ioc-edge/launch --config /etc/ioc-edge/agent.toml\n" in unit  # edge/launcher.py
    assert (out / "launch").read_text() == (ROOT / "edge/launcher.py").read_text()
    assert "Restart=always\n" in unit and "EnvironmentFile=/etc/ioc-edge/credentials.env\n" in unit
    assert (out / "requirements.lock").is_file() and any((out / "wheels").glob("ioc_edge-*.whl"))
    assert not (out / "src").exists()
    assert not list(tmp_path.glob("usb/.*partial*"))  # the scratch folder is gone


def test_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    result = run_provision("pi-bundle", "--out", str(tmp_path), "--site", SITE, "--offline", "--insecure-plaintext",
                           "--enrollment-token", "t", "--broker", "h:1", "--fleet", "http://h")
    assert result.code == 1 and result.err.startswith("provision: ") and "not an empty folder" in result.err


async def test_registered_bundle_installs_into_a_versioned_folder(fleet: FleetUnderTest, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "bundle"
    result = await arun_provision("pi-bundle", "--out", str(out), "--site", SITE, "--role", "sim",
                                  "--insecure-plaintext",  # the test fleet's broker has no TLS
                                  "--fleet", fleet.url, "--token", fleet.technician_token)
    assert result.code == 0, result.err
    device_id = result.out.split()[1]
    device = (await fleet.http.get(f"/api/devices/{device_id}")).json()
    assert device["kind"] == "pi" and device["site"] == SITE
    password = (out / "credentials.env").read_text().removeprefix("EDGE_BROKER__PASSWORD=").strip()
    assert password and mode(out / "credentials.env") == 0o600
    monkeypatch.setenv("EDGE_BROKER__PASSWORD", password)  # as systemd's EnvironmentFile= does
    config = load_config(out / "agent.toml")
    assert config.broker.password is not None and config.broker.password.get_secret_value() == password
    assert config.broker.url == f"mqtt://127.0.0.1:{fleet.mosquitto.port}" and config.broker.ca_file is None
    assert config.fleet is not None and config.fleet.url == fleet.url.rstrip("/") and config.fleet.ca_file is None
    assert not (out / "ca.pem").exists()

    root = tmp_path / "root"
    for _ in range(2):  # installing twice is safe
        installed = staged_install(out, root)
        assert installed.returncode == 0, installed.stderr
    assert os.readlink(root / "opt/ioc-edge/current").startswith("versions/")
    version_dir = (root / "opt/ioc-edge/current").resolve()
    assert version_dir.parent == (root / "opt/ioc-edge/versions").resolve()
    assert (version_dir / ".complete").exists()
    assert mode(root / "etc/ioc-edge/credentials.env") == 0o600
    assert (root / "var/lib/ioc-edge").is_dir()
    assert (root / "etc/systemd/system/ioc-edge.service").read_text() == (out / "ioc-edge.service").read_text()


async def test_offline_bundle_enrolls_when_installed(fleet: FleetUnderTest, tmp_path: Path) -> None:
    response = await fleet.http.post("/api/enrollment-tokens", json={"kind": "pi", "site": SITE})
    token = response.json()["token"]
    out = tmp_path / "bundle"
    result = await arun_provision("pi-bundle", "--out", str(out), "--site", SITE, "--offline",
                                  "--enrollment-token", token, "--broker", f"127.0.0.1:{fleet.mosquitto.port}",
                                  "--insecure-plaintext", "--fleet", fleet.url)
    assert result.code == 0, result.err
    device_id = result.out.split()[1]
    root = tmp_path / "root"
    proc = await asyncio.to_thread(staged_install, out, root)  # the fleet keeps serving meanwhile
    assert proc.returncode == 0, proc.stderr
    env = (root / "etc/ioc-edge/credentials.env").read_text()
    assert env.startswith("EDGE_BROKER__PASSWORD=") and "ENROLLMENT" not in env
    assert mode(root / "etc/ioc-edge/credentials.env") == 0o600
    assert (await fleet.http.get(f"/api/devices/{device_id}")).json()["kind"] == "pi"
