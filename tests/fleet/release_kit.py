"""Signed test releases made with `cryptography`, as docs/ota.md says a signer makes them."""

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from contract.release import key_id
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto


@dataclass
class SigningKey:
    private: rsa.RSAPrivateKey

    @classmethod
    def new(cls) -> "SigningKey":
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=3072))

    @property
    def id(self) -> str:
        return key_id(self.private.public_key().public_numbers().n)

    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, data: bytes) -> dict[str, str]:
        signature = self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return {"key": self.id, "sig": base64.b64encode(signature).decode()}


@dataclass
class ReleaseFolder:
    """A release folder's content: the files, the metadata text and release.json."""

    kind: str
    version: str
    files: dict[str, bytes]
    classes: list[str] = field(default_factory=list)
    expires: int = 1_900_000_000
    min_version: str = "0.0.0"
    floor: str = "0.0.0"

    def meta_text(self, key: str, sizes: dict[str, int] | None = None, hashes_: dict[str, str] | None = None) -> str:
        entries = [{"path": path, "sha256": (hashes_ or {}).get(path, hashlib.sha256(data).hexdigest()),
                    "size": (sizes or {}).get(path, len(data))} for path, data in self.files.items()]
        return json.dumps({"type": "ioc-release", "kind": self.kind, "classes": self.classes or [self.kind],
                           "version": self.version, "min_version": self.min_version, "floor": self.floor,
                           "expires": self.expires, "key": key, "files": entries}, separators=(",", ":"))

    def signed(self, *keys: SigningKey, meta: str | None = None) -> dict[str, Any]:
        text = meta if meta is not None else self.meta_text(keys[0].id if keys else "0" * 16)
        return {"meta": text, "sigs": [key.sign(text.encode()) for key in keys]}

    def tar(self, release_json: dict[str, Any] | None, *, folder: str = "", files: dict[str, bytes] | None = None,
            files_dir: str = "files/") -> bytes:
        """The upload: release.json and files/<path> (provisioning/release.py's layout), at the root
        or in `folder`; `files_dir=""` puts the files next to release.json."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            members = dict(files if files is not None else self.files)
            if release_json is not None:
                members = {"release.json": json.dumps(release_json).encode(), **members}
            for path, data in members.items():
                info = tarfile.TarInfo(folder + (path if path == "release.json" else files_dir + path))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def write_keys(path: Path, *keys: SigningKey) -> Path:
    path.write_text("".join(key.public_pem() for key in keys))
    return path


TAR = {"Content-Type": "application/x-tar"}


# fixtures: a test module imports them by name
@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return SigningKey.new()


@pytest.fixture(scope="module")
def stranger() -> SigningKey:
    """A key the fleet does not hold."""
    return SigningKey.new()


@pytest.fixture
async def ota_fleet(database_url: str, mosquitto: Mosquitto, tmp_path: Path,
                    signer: SigningKey) -> AsyncIterator[httpx.AsyncClient]:
    settings = fleet_settings(database_url, mosquitto.url, ota_dir=tmp_path / "ota",
                              public_url="http://fleet.example:8000",
                              ota_keys=write_keys(tmp_path / "release-keys.pem", signer),
                              ota_release_max=1024 * 1024)
    async with running_fleet(settings) as http:
        yield http
