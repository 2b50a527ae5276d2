"""`provision release keygen|build|sign|verify|trust`, run as the signer runs them (the real CLI in a
process of its own), and what a device's verifier (contract/release.py) makes of the result."""

import hashlib
import json
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from contract.release import ReleaseRefused, TrustList, public_keys_from_pem, verify_release
from provisioning.hostboard import MICROPYTHON
from provisioning.wheels import WheelTarget, lock_header, lock_wheels
from tests.provisioning.conftest import Run, run_provision


@dataclass(frozen=True)
class Key:
    private: Path
    public: Path
    id: str


def _keygen(path: Path) -> Key:
    done = run_provision("release", "keygen", "--out", str(path))
    assert done.code == 0, done.err
    public = path.with_name(path.name.replace(".pem", ".pub.pem"))
    ident = public_keys_from_pem(public.read_text())[0].id
    assert f"ok key {ident}" in done.out
    return Key(path, public, ident)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Key, Key]:
    folder = tmp_path_factory.mktemp("release-keys")
    return _keygen(folder / "old.pem"), _keygen(folder / "new.pem")


@pytest.fixture(scope="module")
def esp32_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unsigned esp32 release, built once; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("esp32-release") / "rel"
    done = run_provision("release", "build", "--kind", "esp32", "--version", "0.2.0", "--min-version", "0.1.0",
                         "--floor", "0.1.0", "--expires-days", "30", "--out", str(out))
    assert done.code == 0, done.err
    assert "ok esp32-0.2.0 for esp32:" in done.out
    return out


def _copy(folder: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(folder), str(dest)], check=True)
    return dest


def _signed(release: Path, dest: Path, *signers: Key) -> Path:
    folder = _copy(release, dest)
    args = [arg for key in signers for arg in ("--key", str(key.private))]
    done = run_provision("release", "sign", str(folder), *args)
    assert done.code == 0, done.err
    return folder


def _verify(folder: Path, *trust: Path) -> Run:
    return run_provision("release", "verify", str(folder), "--trust", *map(str, trust))


def _release_json(folder: Path) -> dict[str, object]:
    document: dict[str, object] = json.loads((folder / "release.json").read_text())
    return document


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites_one(tmp_path: Path) -> None:
    key = _keygen(tmp_path / "signer.pem")
    assert stat.S_IMODE(key.private.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key.private.read_text()
    before = key.private.read_bytes()
    again = run_provision("release", "keygen", "--out", str(key.private))
    assert again.code == 1
    assert again.err.strip() == (f"provision: {key.private} exists: a release key is never overwritten "
                                 "(choose another --out)")
    assert key.private.read_bytes() == before


def test_an_esp32_release_is_the_compiled_slot_at_its_version_app_mpy_last(esp32_release: Path) -> None:
    meta = json.loads((esp32_release / "meta.json").read_text())
    assert len((esp32_release / "meta.json").read_bytes()) <= 8192
    assert (meta["kind"], meta["classes"], meta["version"], meta["min_version"], meta["floor"]) == (
        "esp32", ["esp32"], "0.2.0", "0.1.0", "0.1.0")
    paths = [entry["path"] for entry in meta["files"]]
    assert paths[-1] == "app.mpy" and "roles/light.mpy" in paths and "version.mpy" in paths
    on_disk = sorted(p.relative_to(esp32_release / "files").as_posix()
                     for p in (esp32_release / "files").rglob("*") if p.is_file())
    assert on_disk == sorted(paths) and all(path.endswith(".mpy") for path in paths)
    for entry in meta["files"]:
        data = (esp32_release / "files" / entry["path"]).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["size"])
    # the compiled version module says the release's version, under the real MicroPython
    done = subprocess.run([str(MICROPYTHON), "-c", "import sys; sys.path.insert(0, '.'); import version; "
                           "print(version.FW)"], cwd=esp32_release / "files", capture_output=True, text=True,
                          timeout=30)
    assert done.stdout.strip() == "0.2.0", done.stderr


def test_signed_by_one_key_it_verifies_with_the_tool_and_with_a_devices_verifier(
        esp32_release: Path, keys: tuple[Key, Key], tmp_path: Path) -> None:
    old, new = keys
    folder = _signed(esp32_release, tmp_path / "rel", old)
    signed = _release_json(folder)
    sigs = signed["sigs"]
    assert isinstance(sigs, list) and [sig["key"] for sig in sigs] == [old.id]
    assert json.loads(str(signed["meta"]))["key"] == old.id
    trust_file = tmp_path / "ota_keys.json"
    made = run_provision("release", "trust", str(old.public), "--out", str(trust_file))
    assert made.code == 0 and f"1 keys ({old.id})" in made.out
    done = _verify(folder, trust_file)
    assert done.code == 0, done.out + done.err
    assert done.out.startswith(f"ok esp32-0.2.0: signed by {old.id}, ")
    meta = verify_release(str(signed["meta"]), sigs, TrustList.load(trust_file))
    assert meta.name == "esp32-0.2.0" and meta.signed_by == (old.id,)
    refused = _verify(folder, new.public)  # a device that trusts only another key
    assert refused.code == 14
    assert "unknown_key: no signature is by a key this device trusts" in refused.out


def test_a_tampered_truncated_missing_or_extra_file_is_named_by_verify(
        esp32_release: Path, keys: tuple[Key, Key], tmp_path: Path) -> None:
    old, _ = keys
    folder = _signed(esp32_release, tmp_path / "rel", old)
    assert _verify(folder, old.public).code == 0
    light = folder / "files/roles/light.mpy"
    data = light.read_bytes()
    light.write_bytes(data[:10] + bytes([data[10] ^ 0x01]) + data[11:])  # same size, one bit changed
    config = folder / "files/config.mpy"
    signed_size = config.stat().st_size
    config.write_bytes(config.read_bytes()[:-5])  # truncated
    (folder / "files/link.mpy").unlink()
    (folder / "files/evil.mpy").write_bytes(b"x")
    done = _verify(folder, old.public)
    assert done.code == 14
    assert sorted(done.out.splitlines()) == sorted([
        f"{folder}: roles/light.mpy: its SHA-256 is not the signed one (hash_mismatch)",
        f"{folder}: config.mpy: {signed_size - 5} bytes, signed as {signed_size} (size_mismatch)",
        f"{folder}: link.mpy: missing",
        f"{folder}: evil.mpy: in files/ but not in the release",
    ])
    assert done.err.strip() == f"provision: {folder}: 4 problem(s); devices would refuse this release"


def test_tampered_metadata_fails_its_signature(esp32_release: Path, keys: tuple[Key, Key], tmp_path: Path) -> None:
    old, _ = keys
    folder = _signed(esp32_release, tmp_path / "rel", old)
    signed = _release_json(folder)
    signed["meta"] = str(signed["meta"]).replace('"floor":"0.1.0"', '"floor":"0.0.0"')
    (folder / "release.json").write_text(json.dumps(signed))
    done = _verify(folder, old.public)
    assert done.code == 14 and "bad_signature: no signature by a trusted key checks" in done.out


def test_two_keys_sign_one_release_and_either_is_enough(esp32_release: Path, keys: tuple[Key, Key],
                                                        tmp_path: Path) -> None:
    old, new = keys
    at_once = _signed(esp32_release, tmp_path / "both", old, new)
    assert [sig["key"] for sig in _release_json(at_once)["sigs"]] == [old.id, new.id]  # type: ignore[attr-defined]
    # a second signer on another machine adds a signature to the same metadata text
    one_by_one = _signed(esp32_release, tmp_path / "first", old)
    text = _release_json(one_by_one)["meta"]
    done = run_provision("release", "sign", str(one_by_one), "--key", str(new.private))
    assert done.code == 0, done.err
    assert _release_json(one_by_one)["meta"] == text
    assert [sig["key"] for sig in _release_json(one_by_one)["sigs"]] == [old.id, new.id]  # type: ignore[attr-defined]
    for folder in (at_once, one_by_one):
        for trusted in (old.public, new.public):
            assert _verify(folder, trusted).code == 0


def test_key_rotation_old_key_announces_the_new_then_the_new_retires_the_old(
        esp32_release: Path, keys: tuple[Key, Key], tmp_path: Path) -> None:
    """docs/ota.md, "Key rotation", as a device holding only the old key lives through it."""
    old, new = keys

    def release(version: str, next_keys: list[Key], signer: Key) -> tuple[str, list[object]]:
        out = tmp_path / f"rel-{version}"
        args = ["--next-keys", *[str(key.public) for key in next_keys]] if next_keys else []
        built = run_provision("release", "build", "--kind", "esp32", "--version", version, "--out", str(out), *args)
        assert built.code == 0, built.err
        signed = run_provision("release", "sign", str(out), "--key", str(signer.private))
        assert signed.code == 0, signed.err
        document = _release_json(out)
        sigs = document["sigs"]
        assert isinstance(sigs, list)
        return str(document["meta"]), sigs

    device_trust = TrustList.of(public_keys_from_pem(old.public.read_text()))
    # (1) signed by the old key, carrying [old, new]: the device commits it and takes the new list
    meta = verify_release(*release("0.3.0", [old, new], old), device_trust)
    assert meta.keys is not None and meta.keys.ids == (old.id, new.id)
    device_trust = meta.keys
    # (2) releases after it are signed by the new key
    meta_text, sigs = release("0.4.0", [], new)
    assert verify_release(meta_text, sigs, device_trust).signed_by == (new.id,)
    with pytest.raises(ReleaseRefused) as before_rotation:
        verify_release(meta_text, sigs, TrustList.of(public_keys_from_pem(old.public.read_text())))
    assert before_rotation.value.reason == "unknown_key"  # a device that missed (1) must take (1) first
    # (3) a release with keys [new] retires the old key
    meta = verify_release(*release("0.5.0", [new], new), device_trust)
    assert meta.keys is not None and meta.keys.ids == (new.id,)
    device_trust = meta.keys
    with pytest.raises(ReleaseRefused) as retired:
        verify_release(*release("0.6.0", [], old), device_trust)
    assert retired.value.reason == "unknown_key"


def _fake_wheel_set(folder: Path, edge_version: str) -> Path:
    """Wheel files as pi-bundle names them (the release tool reads names and bytes, never a wheel's inside)."""
    wheels = folder / "wheels"
    wheels.mkdir(parents=True)
    for name, body in ((f"ioc_edge-{edge_version}-py3-none-any.whl", b"edge"),
                       ("ioc_contract-0.2.0-py3-none-any.whl", b"contract"),
                       ("pydantic_core-2.27.2-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
                        b"core" * 1000)):
        (wheels / name).write_bytes(body)
    return wheels


def _bundle(folder: Path, edge_version: str = "0.2.0") -> Path:
    wheels = _fake_wheel_set(folder, edge_version)
    locked = lock_wheels(wheels)
    (folder / "requirements.lock").write_text(lock_header(WheelTarget.named("pi-arm64"))
                                              + "".join(f"{wheel.line}\n" for wheel in locked))
    return folder


def test_a_pi_release_is_one_deterministic_tar_of_the_bundles_wheels_and_lock(tmp_path: Path,
                                                                              keys: tuple[Key, Key]) -> None:
    old, _ = keys
    bundle = _bundle(tmp_path / "bundle")
    outs = []
    for run in ("a", "b"):
        out = tmp_path / f"pi-{run}"
        done = run_provision("release", "build", "--kind", "pi", "--version", "0.2.0", "--from-bundle", str(bundle),
                             "--out", str(out))
        assert done.code == 0, done.err
        assert "ok pi-0.2.0 for pi-arm64: 1 files" in done.out
        outs.append(out)
    meta = json.loads((outs[0] / "meta.json").read_text())
    assert meta["classes"] == ["pi-arm64"] and [f["path"] for f in meta["files"]] == ["ioc-edge-0.2.0.tar"]
    tars = [out / "files/ioc-edge-0.2.0.tar" for out in outs]
    assert tars[0].read_bytes() == tars[1].read_bytes()  # the same wheel set makes the same bytes
    with tarfile.open(tars[0]) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["requirements.lock", *sorted(
            f"wheels/{p.name}" for p in (bundle / "wheels").iterdir())]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
        lock = tar.extractfile("requirements.lock")
        assert lock is not None and lock.read() == (bundle / "requirements.lock").read_bytes()
    assert tars[0].read_bytes()[:2] != b"\x1f\x8b"  # not gzipped: a delta between versions stays small
    folder = _signed(outs[0], tmp_path / "signed", old)
    assert _verify(folder, old.public).code == 0


def test_a_pi_release_names_its_classes_and_the_agents_version(tmp_path: Path) -> None:
    wheels = _fake_wheel_set(tmp_path / "loose", "0.2.0")
    no_class = run_provision("release", "build", "--kind", "pi", "--version", "0.2.0", "--wheels", str(wheels),
                             "--out", str(tmp_path / "a"))
    assert no_class.code == 1 and "--class: the wheels do not say which Pi they are for" in no_class.err
    ok = run_provision("release", "build", "--kind", "pi", "--version", "0.2.0", "--wheels", str(wheels),
                       "--class", "pi-x86_64", "--class", "pi-arm64", "--out", str(tmp_path / "b"))
    assert ok.code == 0 and "for pi-x86_64, pi-arm64" in ok.out
    other = run_provision("release", "build", "--kind", "pi", "--version", "0.3.0", "--wheels", str(wheels),
                          "--class", "pi-x86_64", "--out", str(tmp_path / "c"))
    assert other.code == 1
    assert "--version 0.3.0: the wheel set's ioc-edge is 0.2.0" in other.err
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.partial-*"))


@pytest.mark.parametrize(("args", "message"), [
    (["--version", "0.2"], "--version: a version is MAJOR.MINOR.PATCH"),
    (["--version", "0.2.0", "--min-version", "0.3.0"], "--min-version: at most --version"),
    (["--version", "0.2.0", "--floor", "1.0.0"], "--floor: at most --version"),
    (["--version", "0.2.0", "--class", "ESP32"], "the release would be refused by devices: classes:"),
])
def test_build_refuses_what_devices_would_refuse(tmp_path: Path, args: list[str], message: str) -> None:
    done = run_provision("release", "build", "--kind", "esp32", *args, "--out", str(tmp_path / "rel"))
    assert done.code == 1 and message in done.err, done.err
    assert not (tmp_path / "rel").exists()


def test_a_trust_list_holds_at_most_four_keys(keys: tuple[Key, Key], tmp_path: Path) -> None:
    old, new = keys
    out = tmp_path / "ota_keys.json"
    done = run_provision("release", "trust", str(old.public), str(new.public), "--out", str(out))
    assert done.code == 0
    assert TrustList.load(out).ids == (old.id, new.id)
    assert json.loads(out.read_text())["keys"][0] == {"id": old.id, "n": format(
        public_keys_from_pem(old.public.read_text())[0].n, "x")}
    extra = [_keygen(tmp_path / f"k{i}.pem").public for i in range(3)]
    too_many = run_provision("release", "trust", str(old.public), str(new.public), *map(str, extra),
                             "--out", str(tmp_path / "five.json"))
    assert too_many.code == 1 and "a trust list holds 1 to 4 keys" in too_many.err
