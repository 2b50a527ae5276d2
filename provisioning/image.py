"""What goes onto an ESP32: the firmware files, its config.json, ca.der and the manifest.

How they are written so that an interruption at any point leaves a board that boots its previous
firmware (staged beside it, checked, then switched in at once) is `provisioning.staging`.

`ca.der` (the CA certificates the board checks its broker and fleet against, DER) is written
with `config.json`; a board flashed with `--insecure-plaintext` has none.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioning.errors import ProvisionError
from provisioning.firmware_build import compile_slot
from provisioning.hostboard import FIRMWARE_DIR

MARKER = "provision.partial"
MANIFEST = "provision.json"
CONFIG = "config.json"
CA_FILE = "ca.der"  # firmware/app_a/trust.py reads it
CA_FILE_MAX = 8192  # the firmware refuses a larger ca.der (trust.CA_MAX)
OTA_KEYS = "ota_keys.json"  # the release keys the board trusts (docs/ota.md); outside the slots
BOOT_STAGE = "main.py"
SKIP_NAMES = ("__pycache__",)
SKIP_SUFFIXES = (".pyc",)

# Runs on the board (MicroPython): remove paths, recursively.
_RM_TREE = """import os
def _rm(p):
    try:
        m = os.stat(p)[0]
    except OSError:
        return
    if m & 0x4000:
        for e in list(os.ilistdir(p)):
            _rm(p + '/' + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
for _p in {paths!r}:
    _rm(_p)
"""
_MKDIRS = """import os
for _d in {dirs!r}:
    try:
        os.mkdir(_d)
    except OSError:
        pass
"""
# Prints the SHA-256 of each file, or '-' for a missing one.
_HASHES = """import hashlib, binascii
_b = bytearray(512)
for _p in {paths!r}:
    try:
        _h = hashlib.sha256()
        with open(_p, 'rb') as _f:
            while True:
                _n = _f.readinto(_b)
                if not _n:
                    break
                _h.update(_b[:_n])
        print(binascii.hexlify(_h.digest()).decode())
    except OSError:
        print('-')
"""


def rm_tree_code(paths: list[str] | tuple[str, ...]) -> str:
    return _RM_TREE.format(paths=list(paths))


def mkdirs_code(dirs: list[str]) -> str:
    return _MKDIRS.format(dirs=dirs)


def hashes_code(paths: list[str]) -> str:
    return _HASHES.format(paths=paths)


@dataclass(frozen=True)
class FirmwareImage:
    """The files of `firmware/` (the board's filesystem root), boot stage last."""

    files: dict[str, bytes]  # board path (relative, '/'-separated) -> content
    version: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())

    def dirs(self) -> list[str]:
        """Folders to create, parents first."""
        out: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(out, key=lambda d: (d.count("/"), d))

    def app_files(self) -> list[str]:
        """Everything except the boot stage, in a stable order."""
        return sorted(p for p in self.files if p != BOOT_STAGE)

    @classmethod
    def from_dir(cls, root: Path = FIRMWARE_DIR) -> FirmwareImage:
        files: dict[str, bytes] = {}
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if any(part in SKIP_NAMES for part in rel.parts) or path.suffix in SKIP_SUFFIXES:
                continue
            if path.is_file():
                files[rel.as_posix()] = path.read_bytes()
        if BOOT_STAGE not in files:
            raise ValueError(f"{root} has no {BOOT_STAGE}: not a firmware folder")
        return cls(files=files, version=_firmware_version(files), roles=_firmware_roles(files))


    @classmethod
    def build(cls, root: Path = FIRMWARE_DIR) -> FirmwareImage:
        """The image as flashed: the boot stage as source, the app slot precompiled to .mpy.

        Version and roles are read from the sources; the board gets bytecode, which loads
        without the compile-time heap peak and writes faster.
        """
        sources = cls.from_dir(root)
        with tempfile.TemporaryDirectory(prefix="fw-build-") as tmp:
            staged = Path(tmp) / "firmware"
            shutil.copytree(root, staged, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            compile_slot(staged / "app_a")
            built = cls.from_dir(staged)
        return cls(files=built.files, version=sources.version, roles=sources.roles)


def _firmware_version(files: dict[str, bytes]) -> str:
    source = files.get("app_a/version.py", b"").decode(errors="replace")
    found = re.search(r"""^FW\s*=\s*["']([^"']+)["']""", source, re.M)
    return found.group(1) if found else "unknown"


def _firmware_roles(files: dict[str, bytes]) -> frozenset[str]:
    """Roles the image can run: named in roles/registry.py's REGISTRY and with a roles/<name> module."""
    source = files.get("app_a/roles/registry.py", b"").decode(errors="replace")
    found = re.search(r"REGISTRY\s*=\s*\{(.*?)\}", source, re.S)
    if not found:
        return frozenset()
    names = re.findall(r"""["']([a-z0-9_]+)["']\s*:""", found.group(1))
    return frozenset(name for name in names
                     if f"app_a/roles/{name}.py" in files or f"app_a/roles/{name}.mpy" in files)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def board_ca(ca_pem: str) -> bytes:
    """The CA certificates (PEM, as provisioning.broker_tls.read_ca_file checked them) as the board
    holds them in ca.der: DER, back to back (mbedtls on the board may lack a PEM parser)."""
    blocks = [f"-----BEGIN CERTIFICATE-----{block}-----END CERTIFICATE-----\n"
              for block in ca_pem.split("-----BEGIN CERTIFICATE-----")[1:]
              for block in [block.split("-----END CERTIFICATE-----")[0]]]
    out = b"".join(ssl.PEM_cert_to_DER_cert(block) for block in blocks)
    if len(out) > CA_FILE_MAX:
        raise ProvisionError(f"--ca-file: {len(out)} bytes of CA certificates; a board takes at most "
                             f"{CA_FILE_MAX} (give only the CA that signed the broker's certificate)")
    return out


def board_config(device_id: str, broker_host: str, broker_port: int, roles: list[str], *,
                 username: str | None = None, password: str | None = None,
                 enrollment_token: str | None = None, fleet_url: str | None = None,
                 wifi_ssid: str | None = None, wifi_password: str | None = None,
                 insecure_plaintext: bool = False, extra: dict[str, Any] | None = None) -> bytes:
    """config.json for the firmware (docs/firmware.md): credentials, or an enrollment token.

    The board speaks TLS (checked against ca.der) unless `insecure_plaintext`, which is written
    only when asked for.
    """
    config: dict[str, Any] = {"device_id": device_id, "broker_host": broker_host,
                              "broker_port": broker_port, "roles": roles}
    if insecure_plaintext:
        config["insecure_plaintext"] = True
    if enrollment_token is not None:
        config.update(enrollment_token=enrollment_token, fleet_url=fleet_url)
    else:
        config.update(username=username, password=password)
    if wifi_ssid is not None:
        config.update(wifi_ssid=wifi_ssid, wifi_password=wifi_password)
    config.update(extra or {})
    return (json.dumps(config, indent=1) + "\n").encode()


def manifest(device_id: str, image: FirmwareImage, config: bytes, ca: bytes | None = None,
             ota_keys: bytes | None = None) -> bytes:
    files = {path: sha256(data) for path, data in image.files.items()}
    files[CONFIG] = sha256(config)
    if ca is not None:
        files[CA_FILE] = sha256(ca)
    if ota_keys is not None:
        files[OTA_KEYS] = sha256(ota_keys)
    return (json.dumps({"device_id": device_id, "fw": image.version, "files": files},
                       indent=1) + "\n").encode()


def marker(device_id: str) -> bytes:
    return json.dumps({"device_id": device_id}).encode()
