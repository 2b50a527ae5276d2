"""Files the fleet keeps by content (OTA blobs, audio clips): hashing in chunks and durable renames."""

import hashlib
import os
from pathlib import Path

CHUNK = 256 * 1024  # what one read from disk holds at most


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and length of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: so a rename in it survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
