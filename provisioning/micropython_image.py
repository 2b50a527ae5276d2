"""The MicroPython images the city keeps for blank boards: the manifest and fetching one image.

The manifest (provisioning/micropython-images.toml, or --micropython-manifest) pins each image's
SHA-256, chip and MicroPython version; the image file itself is not in the repository. An image
is read from a path (relative to --image-dir, default the manifest's folder) or fetched from a
URL (relative URLs are on the fleet, --fleet). The bytes are refused before anything is written
to a board when their SHA-256 is not the pinned one.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx

from provisioning.errors import ImageHashMismatch, ProvisionError

DEFAULT_MANIFEST = Path(__file__).resolve().parent / "micropython-images.toml"
MAX_IMAGE_BYTES = 16 << 20  # the largest ESP32 flash; a bigger download is refused while it arrives
SIZE = re.compile(r"^(\d+)\s*(KB|MB)$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4MB' -> 4194304 (esptool's way of writing flash sizes)."""
    match = SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"not a size like 4MB: {text!r}")
    return int(match.group(1)) << (20 if match.group(2).upper() == "MB" else 10)


@dataclass(frozen=True)
class MicroPythonImage:
    name: str
    chip: str  # esptool's chip name: esp32, esp32s3, ...
    micropython: str  # the version the image is
    sha256: str
    offset: int  # where it goes in flash (ESP32: 0x1000)
    flash_size: int  # the flash its partition table needs, bytes
    file: str | None = None
    url: str | None = None

    def describe(self) -> str:
        return f"MicroPython {self.micropython} for {self.chip} ({self.name})"


@dataclass(frozen=True)
class ImageManifest:
    path: Path
    default: str | None
    images: dict[str, MicroPythonImage]

    @classmethod
    def load(cls, path: Path) -> ImageManifest:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ProvisionError(f"cannot read the MicroPython image manifest {path}: {err}") from err
        images: dict[str, MicroPythonImage] = {}
        for name, entry in (data.get("image") or {}).items():
            try:
                images[name] = _entry(name, entry)
            except (KeyError, TypeError, ValueError) as err:
                raise ProvisionError(f"{path}: image {name!r}: {err}") from err
        default = data.get("default")
        return cls(path, default if isinstance(default, str) else None, images)

    def choose(self, name: str | None) -> MicroPythonImage:
        wanted = name or self.default
        if wanted is None or wanted not in self.images:
            known = ", ".join(sorted(self.images)) or "none"
            raise ProvisionError(f"no MicroPython image {wanted or '(no default)'} in {self.path} (it has: {known}); "
                                 "add its entry (docs/provisioning.md, 'Blank boards')")
        return self.images[wanted]


def _entry(name: str, entry: dict[str, object]) -> MicroPythonImage:
    sha = str(entry["sha256"]).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError("sha256 must be 64 hex digits")
    file, url = entry.get("file"), entry.get("url")
    if (file is None) == (url is None):
        raise ValueError("give one of file or url")
    offset = entry.get("offset", 0x1000)
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("offset must be a non-negative integer")
    return MicroPythonImage(name=name, chip=str(entry["chip"]).lower(), micropython=str(entry["micropython"]),
                            sha256=sha, offset=offset, flash_size=parse_size(str(entry.get("flash_size", "4MB"))),
                            file=None if file is None else str(file), url=None if url is None else str(url))


def read_image(image: MicroPythonImage, *, image_dir: Path, fleet_url: str | None,
               timeout: float = 30.0) -> bytes:
    """The image's bytes, checked against the pinned SHA-256 (ImageHashMismatch otherwise)."""
    if image.file is not None:
        path = image_dir / image.file
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ProvisionError(f"cannot read the MicroPython image {path}: {err.strerror or err}") from err
        where = str(path)
    else:
        assert image.url is not None
        if "://" not in image.url and not fleet_url:
            raise ProvisionError(f"the MicroPython image {image.name} is at {image.url} on the fleet: give --fleet URL")
        where = urljoin((fleet_url or "").rstrip("/") + "/", image.url.lstrip("/")) if "://" not in image.url \
            else image.url
        data = _download(where, timeout)
    digest = hashlib.sha256(data).hexdigest()
    if digest != image.sha256:
        raise ImageHashMismatch(f"the MicroPython image {where} has SHA-256 {digest[:16]}..., the manifest pins "
                                f"{image.sha256[:16]}... ({image.name}): nothing was written")
    return data


def _download(url: str, timeout: float) -> bytes:
    body = bytearray()
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=False) as response:
            if response.status_code != 200:
                raise ProvisionError(f"cannot fetch the MicroPython image {url}: HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_IMAGE_BYTES:
                    raise ProvisionError(f"the MicroPython image {url} is larger than {MAX_IMAGE_BYTES >> 20} MB")
    except httpx.HTTPError as err:
        raise ProvisionError(f"cannot fetch the MicroPython image {url}: {err}") from err
    return bytes(body)
