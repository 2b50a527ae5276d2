"""The release signer's tool (docs/ota.md): make a key, build a release, sign it, check it.

    provision release keygen --out key.pem            RSA-3072; key.pem (0600) and key.pub.pem
    provision release build --kind esp32 --version X --out DIR
    provision release build --kind pi --version X (--from-bundle B | --wheels W) --out DIR
    provision release sign DIR --key key.pem [--key key2.pem]
    provision release verify DIR --trust ota_keys.json|key.pub.pem ...
    provision release trust key.pub.pem ... --out ota_keys.json

A release folder holds `meta.json` (the metadata text, unsigned), `files/<path>` (every file the
metadata lists) and, once signed, `release.json` (`{"meta": <text>, "sigs": [...]}`), which is
what the fleet publishes. Signing is the one place a private key is used; it needs
`cryptography`. Verifying is contract/release.py, the same code the fleet and the Pi run.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import platform as host_platform
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from contract.release import (
    ESP32_ENTRY,
    KEY_BITS,
    PUBLIC_EXPONENT,
    PublicKey,
    ReleaseRefused,
    TrustList,
    TrustListError,
    parse_meta,
    parse_version,
    public_keys_from_pem,
    verify_release,
)
from provisioning.errors import ProvisionError, ReleaseInvalid
from provisioning.firmware_build import BuildError, compile_slot
from provisioning.hostboard import FIRMWARE_DIR
from provisioning.pibundle import LOCK_NAME
from provisioning.wheels import EDGE_DISTRIBUTION, PI_TARGETS, lock_wheels, sha256_of

META_NAME = "meta.json"
SIGNED_NAME = "release.json"
FILES_DIR = "files"
DEFAULT_EXPIRES_DAYS = 90
DAY_S = 86400
UNSET_KEY = ""  # in meta.json until `sign` puts the first signer's key id there
_FW_LINE = re.compile(r"""^FW\s*=\s*["'][^"']*["']""", re.M)
_LOCK_TARGET = re.compile(r"^# For (pi-[a-z0-9]+): ", re.M)
_MACHINE_CLASS = {"x86_64": "pi-x86_64", "aarch64": "pi-arm64", "armv7l": "pi-armv7", "armv8l": "pi-armv7"}


def public_key_path(private: Path) -> Path:
    """key.pem -> key.pub.pem"""
    name = private.name[:-4] if private.name.endswith(".pem") else private.name
    return private.with_name(f"{name}.pub.pem")


def _create(path: Path, data: bytes, mode: int) -> None:
    """Write a new file with `mode` from the start; an existing file is never replaced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the umask may have taken bits away


def _replace(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all (a scratch file renamed over it)."""
    scratch = path.with_name(f".{path.name}.partial")
    scratch.write_bytes(data)
    os.replace(scratch, path)


# keys ---------------------------------------------------------------------------------------
def keygen(out: Path) -> tuple[Path, str]:
    """A new RSA-3072 signing key in `out` (0600) and its public half beside it; the key id."""
    pub = public_key_path(out)
    for path in (out, pub):
        if path.exists():
            raise ProvisionError(f"{path} exists: a release key is never overwritten (choose another --out)")
    private = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_BITS)
    try:
        _create(out, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)
        _create(pub, private.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    except FileExistsError as err:
        raise ProvisionError(f"{err.filename} exists: a release key is never overwritten") from err
    except OSError as err:
        raise ProvisionError(f"{out}: cannot write the key: {err.strerror or err}") from err
    return pub, PublicKey(private.public_key().public_numbers().n).id


@dataclass(frozen=True)
class SigningKey:
    private: rsa.RSAPrivateKey
    public: PublicKey

    @property
    def id(self) -> str:
        return self.public.id

    def sign(self, data: bytes) -> dict[str, str]:
        signature = self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return {"key": self.id, "sig": base64.b64encode(signature).decode()}


def load_signing_key(path: Path) -> SigningKey:
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        raise ProvisionError(f"{path}: cannot read the key: {err.strerror or err}") from err
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ProvisionError(f"{path}: not an unencrypted PEM private key ({err})") from err
    if (not isinstance(private, rsa.RSAPrivateKey) or private.key_size != KEY_BITS
            or private.public_key().public_numbers().e != PUBLIC_EXPONENT):
        raise ProvisionError(f"{path}: a release key is RSA-{KEY_BITS} with exponent {PUBLIC_EXPONENT} "
                             "(make one with provision release keygen)")
    return SigningKey(private, PublicKey(private.public_key().public_numbers().n))


def read_public_keys(paths: Iterable[Path]) -> list[PublicKey]:
    """The public keys in PEM files (or the keys of ota_keys.json files), in order, each once."""
    keys: list[PublicKey] = []
    for path in paths:
        try:
            text = path.read_text()
            found = public_keys_from_pem(text) if "-----BEGIN" in text else list(TrustList.from_json(text).keys)
        except OSError as err:
            raise ProvisionError(f"{path}: cannot read it: {err.strerror or err}") from err
        except (TrustListError, UnicodeDecodeError) as err:
            raise ProvisionError(f"{path}: not a public key file or trust list: {err}") from err
        keys.extend(key for key in found if key not in keys)
    return keys


def trust_list(paths: Sequence[Path]) -> TrustList:
    try:
        return TrustList.of(read_public_keys(paths))
    except TrustListError as err:
        raise ProvisionError(f"trust list: {err}") from err


def write_trust(paths: Sequence[Path], out: Path) -> TrustList:
    """ota_keys.json of the public keys in `paths` (what a device trusts)."""
    trust = trust_list(paths)
    try:
        _replace(out, trust.to_json().encode())
    except OSError as err:
        raise ProvisionError(f"{out}: cannot write it: {err.strerror or err}") from err
    return trust


# build --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildRequest:
    kind: str  # esp32 | pi
    version: str
    out: Path
    min_version: str = "0.0.0"
    floor: str = "0.0.0"
    expires_days: float = DEFAULT_EXPIRES_DAYS
    classes: tuple[str, ...] = ()
    next_keys: tuple[Path, ...] = ()  # public keys: the trust list after this release (rotation)
    signer: Path | None = None  # the public key that will sign (its id goes into `key`)
    bundle: Path | None = None  # pi: a pi-bundle folder
    wheels: Path | None = None  # pi: a folder of wheels (the lock is made here)
    firmware: Path = FIRMWARE_DIR  # esp32: the firmware tree (its app_a/ is the slot)
    now_s: float | None = None  # for tests; default: now


def _check_versions(request: BuildRequest) -> None:
    for option, value in (("--version", request.version), ("--min-version", request.min_version),
                          ("--floor", request.floor)):
        try:
            parse_version(value)
        except ValueError as err:
            raise ProvisionError(f"{option}: {err}") from err
    if parse_version(request.min_version) > parse_version(request.version):
        raise ProvisionError("--min-version: at most --version")
    if parse_version(request.floor) > parse_version(request.version):
        raise ProvisionError("--floor: at most --version")
    if request.expires_days <= 0:
        raise ProvisionError("--expires-days: more than 0")


def _esp32_files(request: BuildRequest, files_dir: Path) -> list[Path]:
    """The slot, version.py's FW set to the release's version, compiled; app.mpy last."""
    source = request.firmware / "app_a"
    if not (source / "version.py").is_file():
        raise ProvisionError(f"{request.firmware}: no app_a/version.py: not a firmware folder")
    shutil.copytree(source, files_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.mpy"))
    version_py = files_dir / "version.py"
    text = version_py.read_text()
    if not _FW_LINE.search(text):
        raise ProvisionError(f"{source / 'version.py'}: no FW = \"...\" line to set the version in")
    version_py.write_text(_FW_LINE.sub(f'FW = "{request.version}"', text, count=1))
    try:
        compile_slot(files_dir)
    except BuildError as err:
        raise ProvisionError(f"mpy-cross refused a module: {err}") from err
    paths = sorted((path for path in files_dir.rglob("*") if path.is_file()),
                   key=lambda path: path.relative_to(files_dir).as_posix())
    if not (files_dir / ESP32_ENTRY).is_file():
        raise ProvisionError(f"the slot has no {ESP32_ENTRY} after compiling: not a firmware folder")
    return [path for path in paths if path.name != ESP32_ENTRY or path.parent != files_dir] + [files_dir / ESP32_ENTRY]


def _pi_sources(request: BuildRequest) -> tuple[Path, Path | None]:
    """The wheels folder and the lock (None: made from the wheels)."""
    if (request.bundle is None) == (request.wheels is None):
        raise ProvisionError("--kind pi: give --from-bundle BUNDLE_DIR or --wheels DIR")
    if request.bundle is not None:
        wheels, lock = request.bundle / "wheels", request.bundle / LOCK_NAME
        if not wheels.is_dir() or not lock.is_file():
            raise ProvisionError(f"--from-bundle {request.bundle}: no wheels/ and {LOCK_NAME}: not a pi-bundle folder")
        return wheels, lock
    assert request.wheels is not None
    if not request.wheels.is_dir():
        raise ProvisionError(f"--wheels {request.wheels}: not a folder")
    return request.wheels, None


def pi_classes(request: BuildRequest, lock_text: str) -> tuple[str, ...]:
    """The classes a Pi release is for: given, or the bundle's target (its lock's header says which)."""
    if request.classes:
        return request.classes
    found = _LOCK_TARGET.search(lock_text)
    if found and found.group(1) in PI_TARGETS:
        return (found.group(1),)
    if request.bundle is not None and "# For this machine:" in lock_text:
        machine = _MACHINE_CLASS.get(host_platform.machine())
        if machine:
            return (machine,)
    raise ProvisionError("--class: the wheels do not say which Pi they are for; name the device class "
                         f"({', '.join([*PI_TARGETS, 'pi-x86_64'])})")


def _tar_member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_pi_artifact(wheels: Path, lock: Path | None, dest: Path, version: str) -> str:
    """ioc-edge-<version>.tar: requirements.lock and wheels/*.whl, uncompressed and deterministic
    (sorted names, mtime 0, owner 0), so the same wheel set makes the same bytes; the lock text."""
    locked = lock_wheels(wheels)
    edge = next((wheel for wheel in locked if wheel.name == EDGE_DISTRIBUTION), None)
    if edge is None:
        raise ProvisionError(f"{wheels}: no {EDGE_DISTRIBUTION} wheel: not the edge agent's wheel set")
    if edge.version != version:
        raise ProvisionError(f"--version {version}: the wheel set's {EDGE_DISTRIBUTION} is {edge.version} "
                             "(the version a Pi reports is its agent's)")
    if lock is not None:
        lock_text = lock.read_text()
        missing = [wheel.line for wheel in locked if wheel.line not in lock_text.splitlines()]
        if missing:
            raise ProvisionError(f"{lock}: does not pin {missing[0].split('==')[0]} as shipped in wheels/ "
                                 "(a changed wheel?)")
    else:
        lock_text = "# The edge agent's wheels, each pinned to its SHA-256.\n" + "".join(
            f"{wheel.line}\n" for wheel in locked)
    lock_bytes = lock_text.encode()
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_tar_member(LOCK_NAME, len(lock_bytes)), io.BytesIO(lock_bytes))
        for wheel in sorted(locked, key=lambda wheel: wheel.file):
            path = wheels / wheel.file
            with path.open("rb") as handle:
                tar.addfile(_tar_member(f"wheels/{wheel.file}", path.stat().st_size), handle)
    return lock_text


def _file_entry(files_dir: Path, path: Path) -> dict[str, Any]:
    return {"path": path.relative_to(files_dir).as_posix(), "sha256": sha256_of(path), "size": path.stat().st_size}


def meta_text(document: dict[str, Any]) -> str:
    """The metadata as signed: compact JSON, fields in the order of docs/ota.md."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ProvisionError(f"{out}: not an empty folder; give an empty or new folder")


def build_release(request: BuildRequest) -> tuple[Path, dict[str, Any]]:
    """Build the release folder (meta.json, files/); return it and the metadata document."""
    if request.kind not in ("esp32", "pi"):
        raise ProvisionError("--kind: esp32 or pi")
    _check_versions(request)
    _check_out(request.out)
    next_keys = trust_list(request.next_keys).to_dict()["keys"] if request.next_keys else None
    signer = read_public_keys([request.signer])[0].id if request.signer else UNSET_KEY
    try:
        request.out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{request.out.name}.partial-", dir=request.out.parent))
    except OSError as err:
        raise ProvisionError(f"{request.out}: cannot write the release: {err.strerror or err}") from err
    try:
        files_dir = scratch / FILES_DIR
        if request.kind == "esp32":
            if request.bundle or request.wheels:
                raise ProvisionError("--from-bundle and --wheels are for --kind pi")
            paths = _esp32_files(request, files_dir)
            classes = request.classes or ("esp32",)
        else:
            wheels, lock = _pi_sources(request)
            files_dir.mkdir()
            artifact = files_dir / f"ioc-edge-{request.version}.tar"
            lock_text = write_pi_artifact(wheels, lock, artifact, request.version)
            paths = [artifact]
            classes = pi_classes(request, lock_text)
        now = time.time() if request.now_s is None else request.now_s
        document: dict[str, Any] = {
            "type": "ioc-release", "kind": request.kind, "classes": list(classes), "version": request.version,
            "min_version": request.min_version, "floor": request.floor,
            "expires": int(now + request.expires_days * DAY_S), "key": signer,
            "files": [_file_entry(files_dir, path) for path in paths]}
        if next_keys:
            document["keys"] = next_keys
        _check_draft(document)
        (scratch / META_NAME).write_text(meta_text(document))
        _check_out(request.out)
        os.chmod(scratch, 0o755)
        os.rename(scratch, request.out)
    except OSError as err:
        raise ProvisionError(f"{request.out}: cannot write the release: {err.strerror or err}") from err
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch)
    return request.out, document


def _check_draft(document: dict[str, Any]) -> None:
    """The metadata a device will accept (the device's own rules), checked before anything is signed."""
    checked = dict(document)
    if checked["key"] == UNSET_KEY:
        checked["key"] = "0" * 16
    try:
        parse_meta(meta_text(checked))
    except ReleaseRefused as err:
        raise ProvisionError(f"the release would be refused by devices: {err.msg}") from err


# sign ---------------------------------------------------------------------------------------
def sign_release(folder: Path, key_paths: Sequence[Path]) -> tuple[Path, list[str]]:
    """Sign the release in `folder` with each key; release.json. A folder signed before keeps its
    metadata text and gains the new signatures (a second signer on another machine)."""
    if not key_paths:
        raise ProvisionError("give --key key.pem (repeatable)")
    keys = [load_signing_key(path) for path in key_paths]
    signed = folder / SIGNED_NAME
    if signed.exists():
        current = _read_signed(folder)
        text, sigs = current["meta"], [sig for sig in current["sigs"] if sig["key"] not in {k.id for k in keys}]
    else:
        try:
            document = json.loads((folder / META_NAME).read_text())
        except OSError as err:
            raise ProvisionError(f"{folder}: no {META_NAME}: build the release first ({err.strerror or err})") from err
        except ValueError as err:
            raise ProvisionError(f"{folder / META_NAME}: not JSON: {err}") from err
        if not isinstance(document, dict):
            raise ProvisionError(f"{folder / META_NAME}: not release metadata")
        if document.get("key") == UNSET_KEY:
            document["key"] = keys[0].id
        text, sigs = meta_text(document), []
        try:
            parse_meta(text)
        except ReleaseRefused as err:
            raise ProvisionError(f"{folder / META_NAME}: devices would refuse it: {err.msg}") from err
    data = text.encode("utf-8")
    sigs += [key.sign(data) for key in keys]
    if len(sigs) > 4:
        raise ProvisionError("a release carries at most 4 signatures")
    try:
        _replace(signed, (json.dumps({"meta": text, "sigs": sigs}, indent=1, ensure_ascii=False) + "\n").encode())
    except OSError as err:
        raise ProvisionError(f"{signed}: cannot write it: {err.strerror or err}") from err
    return signed, [key.id for key in keys]


def _read_signed(folder: Path) -> dict[str, Any]:
    path = folder / SIGNED_NAME
    try:
        document = json.loads(path.read_text())
    except OSError as err:
        raise ReleaseInvalid(f"{path}: cannot read it ({err.strerror or err}); sign the release first") from err
    except ValueError as err:
        raise ReleaseInvalid(f"{path}: not JSON ({err})") from err
    if (not isinstance(document, dict) or not isinstance(document.get("meta"), str)
            or not isinstance(document.get("sigs"), list)
            or not all(isinstance(sig, dict) and isinstance(sig.get("key"), str) for sig in document["sigs"])):
        raise ReleaseInvalid(f'{path}: not a signed release ({{"meta": text, "sigs": [...]}})')
    return document


# verify -------------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    name: str = ""
    signed_by: tuple[str, ...] = ()
    files: int = 0
    size: int = 0
    problems: list[str] = field(default_factory=list)


def verify_release_dir(folder: Path, trust: TrustList) -> VerifyReport:
    """Check release.json's signatures against `trust` and every file in files/ against the
    metadata; each problem is one line in the report."""
    document = _read_signed(folder)
    report = VerifyReport()
    try:
        meta = verify_release(document["meta"], document["sigs"], trust)
    except ReleaseRefused as refused:
        report.problems.append(f"{refused.reason}: {refused.msg}")
        return report
    report.name, report.signed_by, report.files, report.size = meta.name, meta.signed_by, len(meta.files), \
        meta.total_size
    files_dir = folder / FILES_DIR
    for entry in meta.files:
        path = files_dir / entry.path
        if not path.is_file():
            report.problems.append(f"{entry.path}: missing")
            continue
        size = path.stat().st_size
        if size != entry.size:
            report.problems.append(f"{entry.path}: {size} bytes, signed as {entry.size} (size_mismatch)")
        elif sha256_of(path) != entry.sha256:
            report.problems.append(f"{entry.path}: its SHA-256 is not the signed one (hash_mismatch)")
    listed = {entry.path for entry in meta.files}
    if files_dir.is_dir():
        for path in sorted(files_dir.rglob("*")):
            rel = path.relative_to(files_dir).as_posix()
            if path.is_file() and rel not in listed:
                report.problems.append(f"{rel}: in files/ but not in the release")
    return report
