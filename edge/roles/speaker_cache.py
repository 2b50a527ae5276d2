"""The speaker's clip cache: files in a folder, each checked against its SHA-256, within a size
budget.

`index.json` records each clip's sha256, size and last use. A clip enters the cache only whole and
right: it is downloaded (httpx, streamed) to `<name>.part`, its length and SHA-256 are checked,
and only then renamed to `<name>`. Before a clip is played its checksum is checked again (an SD
card can rot); a clip that fails is deleted and reported. Bound: `budget_bytes` in total. Room for
a new clip is made by evicting the least recently used clips; a clip larger than the budget is
refused.
"""

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from edge.errors import EdgeError
from edge.statefile import read_json, write_json

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CHUNK = 64 * 1024


class ClipError(EdgeError):
    """A clip is missing, damaged, too large, or could not be fetched; the message says which."""


@dataclass(slots=True)
class Entry:
    sha256: str
    size: int
    used_ms: int


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ClipError("clip name: 1..64 of a-z 0-9 _ -, starting with a letter or digit")
    return name


class ClipCache:
    def __init__(self, folder: Path, budget_bytes: int) -> None:
        self.folder = folder
        self.budget_bytes = budget_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._index_path = folder / "index.json"
        saved = read_json(self._index_path, {}, if_corrupt={})
        self.entries: dict[str, Entry] = {}
        for name, e in saved.items() if isinstance(saved, dict) else []:
            if isinstance(e, dict) and (folder / name).is_file():
                self.entries[name] = Entry(str(e.get("sha256")), int(e.get("size", 0)), int(e.get("used_ms", 0)))
        self.evictions = 0
        self.checksum_failures = 0

    @property
    def used_bytes(self) -> int:
        return sum(e.size for e in self.entries.values())

    def _save(self) -> None:
        write_json(
            self._index_path,
            {n: {"sha256": e.sha256, "size": e.size, "used_ms": e.used_ms} for n, e in self.entries.items()},
        )

    def has(self, name: str, sha256: str | None = None) -> bool:
        entry = self.entries.get(name)
        return entry is not None and (sha256 is None or entry.sha256 == sha256.lower())

    def verified(self, name: str) -> Path:
        """The clip's file, after checking its SHA-256; ClipError if missing or damaged."""
        entry = self.entries.get(check_name(name))
        path = self.folder / name
        if entry is None or not path.is_file():
            raise ClipError("no clip")
        if _sha256_of(path) != entry.sha256:
            self.checksum_failures += 1
            self.delete(name)
            raise ClipError("bad clip: checksum mismatch (deleted)")
        entry.used_ms = int(time.time() * 1000)
        self._save()
        return path

    def delete(self, name: str) -> bool:
        existed = self.entries.pop(name, None) is not None
        (self.folder / name).unlink(missing_ok=True)
        self._save()
        return existed

    def _make_room(self, size: int, keep: str) -> None:
        if size > self.budget_bytes:
            raise ClipError(f"clip of {size} bytes is larger than the cache budget of {self.budget_bytes}")
        others = sorted((e.used_ms, n) for n, e in self.entries.items() if n != keep)
        used = sum(e.size for n, e in self.entries.items() if n != keep)
        while used + size > self.budget_bytes and others:
            _, victim = others.pop(0)
            used -= self.entries[victim].size
            self.delete(victim)
            self.evictions += 1

    async def fetch(self, client: httpx.AsyncClient, name: str, url: str, sha256: str, size: int) -> Entry:
        """Download a clip and add it; ClipError (nothing changed in the cache) if it fails."""
        check_name(name)
        sha256 = sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ClipError("sha256: 64 hex digits")
        if size > self.budget_bytes:
            raise ClipError(f"clip of {size} bytes is larger than the cache budget of {self.budget_bytes}")
        part = self.folder / f"{name}.part"
        digest = hashlib.sha256()
        got = 0
        try:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ClipError(f"download failed: HTTP {response.status_code}")
                with part.open("wb") as f:
                    async for chunk in response.aiter_bytes(CHUNK):
                        got += len(chunk)
                        if got > size:
                            raise ClipError(f"download failed: more than the {size} bytes announced")
                        digest.update(chunk)
                        f.write(chunk)
            if got != size or digest.hexdigest() != sha256:
                self.checksum_failures += 1
                raise ClipError(f"checksum mismatch: {got} bytes, sha256 {digest.hexdigest()}")
            self._make_room(size, keep=name)
            os.replace(part, self.folder / name)
        except httpx.HTTPError as err:
            raise ClipError(f"download failed: {err}") from err
        finally:
            part.unlink(missing_ok=True)
        entry = self.entries[name] = Entry(sha256, size, int(time.time() * 1000))
        self._save()
        return entry


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
