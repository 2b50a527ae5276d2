"""Release files kept by content: each blob under its SHA-256, written whole or not at all.

`BlobStore` is everything the releases and the downloads ask of a store: put a local file under
its hash (checked), say whether a blob is there and how long it is, read a byte range as chunks,
read a whole blob (delta computation), delete. `FileStore` keeps blobs on the fleet's filesystem
(`FLEET_OTA_DIR`); an S3-compatible store can take its place behind the same five calls (`put`
is an upload of the checked temporary file, `read` a ranged GET, `size` a HEAD).

Layout: `<root>/blobs/<first 2 hex>/<sha256>`; uploads and blobs being written live in
`<root>/tmp/` under random names, and reach their final name by `rename` only after their size
and SHA-256 checked and their bytes were flushed to disk. A crash leaves at most a file in `tmp/`
(cleared at start), never a blob with the wrong content under a hash.
"""

import asyncio
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from fleet import files
from fleet.files import fsync_path, hash_file

CHUNK = files.CHUNK  # what one read from disk (and one piece of an answer) holds at most
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StoreError(Exception):
    """A blob that could not be stored: `reason` is `size_mismatch` or `hash_mismatch`."""

    def __init__(self, reason: str, msg: str) -> None:
        super().__init__(msg)
        self.reason = reason


class BlobStore(Protocol):
    async def put(self, source: Path, sha256: str, size: int) -> None:
        """Take the local file `source` as blob `sha256` after checking its size and hash
        (StoreError if they differ). A file in the store's own temporary folder is moved (and
        removed when refused); any other is copied. A blob already there is kept."""
        ...

    async def size(self, sha256: str) -> int | None:
        """The blob's length in bytes, or None when it is not stored."""
        ...

    def read(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start` to `end` (exclusive) of the blob, in chunks of at most CHUNK bytes."""
        ...

    async def read_all(self, sha256: str) -> bytes:
        ...

    async def delete(self, sha256: str) -> None:
        ...


def is_sha256(text: str) -> bool:
    return bool(_SHA256.fullmatch(text))


class FileStore:
    """Blobs on the local filesystem under `root` (FLEET_OTA_DIR)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"

    def open(self) -> None:
        """Make the folders (private to the fleet's user) and clear what an interrupted write left."""
        for folder in (self.root, self.blobs, self.tmp):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def temp_path(self) -> Path:
        """A fresh name in the store's own file system, for an upload to be written to."""
        return self.tmp / secrets.token_hex(16)

    def path_of(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError("a blob is named by 64 lowercase hex digits")
        return self.blobs / sha256[:2] / sha256

    def _put(self, source: Path, sha256: str, size: int) -> None:
        try:
            final = self.path_of(sha256)
            actual, length = hash_file(source)
            if length != size:
                raise StoreError("size_mismatch", f"{length} bytes where {size} were expected")
            if actual != sha256:
                raise StoreError("hash_mismatch", "the SHA-256 of the bytes is not the expected one")
            if final.exists():
                return
            final.parent.mkdir(mode=0o700, exist_ok=True)
            if source.parent != self.tmp:  # rename works within one file system only
                staged = self.temp_path()
                shutil.copyfile(source, staged)
                source = staged
            with source.open("rb+") as file:
                os.fsync(file.fileno())
            source.chmod(0o600)
            os.replace(source, final)
            fsync_path(final.parent)
        finally:
            if source.parent == self.tmp:
                source.unlink(missing_ok=True)

    async def put(self, source: Path, sha256: str, size: int) -> None:
        await asyncio.to_thread(self._put, source, sha256, size)

    async def put_bytes(self, data: bytes) -> str:
        """Store bytes made by the fleet itself (a delta); returns their SHA-256."""
        sha256 = hashlib.sha256(data).hexdigest()
        staged = self.temp_path()
        await asyncio.to_thread(staged.write_bytes, data)
        await self.put(staged, sha256, len(data))
        return sha256

    async def size(self, sha256: str) -> int | None:
        try:
            return (await asyncio.to_thread(self.path_of(sha256).stat)).st_size
        except FileNotFoundError:
            return None

    async def read(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        file = await asyncio.to_thread(self.path_of(sha256).open, "rb")
        try:
            await asyncio.to_thread(file.seek, start)
            left = end - start
            while left > 0:
                chunk = await asyncio.to_thread(file.read, min(CHUNK, left))
                if not chunk:  # the blob is shorter than it was: stop rather than loop
                    return
                left -= len(chunk)
                yield chunk
        finally:
            file.close()

    async def read_all(self, sha256: str) -> bytes:
        return await asyncio.to_thread(self.path_of(sha256).read_bytes)

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self.path_of(sha256).unlink, missing_ok=True)
