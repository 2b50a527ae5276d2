"""Bundles for a real Pi, resolved from the package index: `--target pi-arm64` and `--target pi-armv7`
(issue 10 §1). Each target's wheels are pure Python or built for that CPU and CPython; nothing of
the fleet's is among them; a bundle for another machine is refused by its install.sh before
anything is made.

These download from the index (about 3 MB per bundle), as the technician's laptop does.
"""

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from unittest import mock

import pytest
from packaging import _manylinux

from provisioning.errors import ProvisionError
from provisioning.wheels import PI_TARGETS, PiTarget, WheelTarget, check_wheel_tags, this_machine
from tests.provisioning.conftest import run_provision
from tests.provisioning.pi_bundle_support import install, read_lock, sha256_file, wheel_name
from tests.provisioning.test_pi_bundle_wheels import EDGE, FLEET_ONLY

SITE = "Nút giao Phú Riềng"
OFFLINE = ("--offline", "--insecure-plaintext", "--enrollment-token", "t", "--broker", "127.0.0.1:1883",
           "--fleet", "http://127.0.0.1:9")


def make(out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    result = run_provision("pi-bundle", "--out", str(out), "--site", SITE, *OFFLINE, *options, timeout=600)
    return subprocess.CompletedProcess([], result.code, result.out, result.err)


@pytest.fixture(scope="module", params=sorted(PI_TARGETS))
def target_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[PiTarget, Path]:
    target = PI_TARGETS[request.param]
    out = tmp_path_factory.mktemp(target.name) / "bundle"
    result = make(out, "--target", target.name, "--role", "sim", "--role", "hotspot")
    assert result.returncode == 0, result.stderr
    return target, out


def test_target_tags_are_those_pip_accepts_on_that_pi() -> None:
    """pip takes --platform literally, so a target lists every manylinux tag its glibc accepts:
    the same list packaging (pip's own tag logic) makes on a machine with glibc 2.36."""
    for target in PI_TARGETS.values():
        with (mock.patch.object(_manylinux, "_get_glibc_version", return_value=target.glibc),
              mock.patch.object(_manylinux, "_have_compatible_abi", return_value=True)):
            on_the_pi = list(_manylinux.platform_tags([target.arch]))
        assert [tag for tag in target.platforms if tag.startswith("manylinux")] == on_the_pi, target.name
    assert PI_TARGETS["pi-armv7"].platforms[-1] == "linux_armv7l"  # PyPI and piwheels take these
    assert {"manylinux_2_36_aarch64", "manylinux_2_28_aarch64", "manylinux_2_17_aarch64",
            "manylinux2014_aarch64"} <= set(PI_TARGETS["pi-arm64"].platforms)


def test_each_wheel_is_for_the_target(target_bundle: tuple[PiTarget, Path]) -> None:
    target, bundle = target_bundle
    locked = read_lock(bundle / "requirements.lock")
    wheels = {wheel_name(path): path for path in (bundle / "wheels").iterdir()}
    assert set(locked) == set(wheels)
    for name, (_, digest) in locked.items():
        assert digest == sha256_file(wheels[name]), name
    compiled = {}
    for name, path in wheels.items():
        python_tag, abi, platforms = path.name.removesuffix(".whl").split("-")[-3:]
        if platforms == "any":
            assert abi == "none" and python_tag.startswith("py3"), path.name
            continue
        assert set(platforms.split(".")) & set(target.platforms), path.name
        assert all(target.arch in tag for tag in platforms.split(".")), path.name
        assert abi in ("cp311", "abi3"), path.name
        compiled[name] = path.name
    # the one compiled wheel: pydantic's core, at exactly the version the shipped pydantic requires
    assert set(compiled) == {"pydantic-core"}, compiled
    with zipfile.ZipFile(wheels["pydantic"]) as wheel:
        metadata = next(wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    pinned = re.search(r"^Requires-Dist: pydantic-core==(\S+)$", metadata, re.M)
    assert pinned and locked["pydantic-core"][0] == pinned[1]
    assert set(EDGE) <= set(locked)
    assert not set(FLEET_ONLY) & set(locked)
    assert "psutil" not in locked
    assert f"# For {target.name}: CPython 3.11, platform tags {target.platforms[0]} " in \
        (bundle / "requirements.lock").read_text()


def test_a_bundle_for_another_machine_is_refused_before_anything_is_made(
        target_bundle: tuple[PiTarget, Path], tmp_path: Path) -> None:
    target, bundle = target_bundle
    if this_machine() in target.machines and sys.version_info[:2] == (3, 11):
        pytest.skip(f"this machine is a {target.name}")
    root = tmp_path / "root"
    result = install(bundle, root)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"install: this bundle is for {target.name} (Python 3.11 on {' or '.join(target.machines)}); "
                     f"this machine runs Python {sys.version_info[0]}.{sys.version_info[1]} on {this_machine()}: "
                     "make its bundle with provision pi-bundle --target (docs/provisioning.md)"], result.stderr
    assert not root.exists()


def test_target_options_refused_in_one_line(tmp_path: Path) -> None:
    unknown = make(tmp_path / "a", "--target", "pi-zero")
    assert unknown.returncode == 1
    assert unknown.stderr == "provision: --target pi-zero: no such target (known: pi-arm64, pi-armv7)\n"
    both = make(tmp_path / "b", "--target", "pi-arm64", "--platform", "manylinux_2_36_aarch64")
    assert both.returncode == 1 and both.stderr.startswith("provision: --target pi-arm64 names the platform tags")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_role_with_no_wheel_for_the_target_is_named(tmp_path: Path) -> None:
    """PyPI has no OpenCV or numpy for a 32-bit Pi: the camera role stops the bundle in one line."""
    result = make(tmp_path / "camera", "--target", "pi-armv7", "--role", "camera")
    assert result.returncode == 1
    assert result.stderr.startswith("provision: cannot get the edge agent's dependencies as wheels for pi-armv7: ")
    assert "numpy" in result.stderr or "opencv" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "camera").exists()


def test_a_wheel_for_another_machine_stops_the_tool(tmp_path: Path) -> None:
    """What pip's configuration on the laptop could add (a find-links folder of x86-64 wheels)."""
    target = WheelTarget.named("pi-arm64")
    (tmp_path / "paho_mqtt-2.2.0-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "pydantic_core-2.50.5-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl").write_bytes(b"")
    check_wheel_tags(tmp_path, target)  # pure Python and the target's own: fine
    for stray in ("psutil-7.2.2-cp36-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                  "pydantic_core-2.50.5-cp312-cp312-manylinux2014_aarch64.whl"):
        (tmp_path / stray).write_bytes(b"")
        with pytest.raises(ProvisionError, match=f"{re.escape(stray)} is not a wheel for pi-arm64 \\(Python 3.11\\)"):
            check_wheel_tags(tmp_path, target)
        (tmp_path / stray).unlink()
