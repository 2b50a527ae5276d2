"""The snapshot store: JPEG files in a bounded folder, referenced from events by name.

Bound and policy: at most `max_bytes` and `max_files`; a new snapshot that would pass either
bound deletes the oldest ones first (the newest are what the IOC asks for). Files are written
to a temporary name and renamed, so a crash leaves no half-written JPEG behind a reference.
With `[fleet] url` set, the role's uploader (upload.py) sends them oldest first and `remove`s each
one the fleet holds; while it cannot, these bounds stay the bound.
"""

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any


class SnapshotStore:
    def __init__(self, folder: Path, *, ref_prefix: str, max_bytes: int, max_files: int) -> None:
        self.folder = folder
        self.ref_prefix = ref_prefix.rstrip("/")
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._lock = threading.Lock()  # cameras write from their own worker threads
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        existing = sorted(folder.glob("*.jpg"), key=lambda p: p.stat().st_mtime_ns)
        # (file, bytes, SHA-256 when written): files found at start have no recorded hash (None)
        self._files: deque[tuple[Path, int, str | None]] = deque((p, p.stat().st_size, None) for p in existing)
        self.total_bytes = sum(size for _, size, _ in self._files)
        self.deleted = 0  # by the bounds
        self.stored = 0
        self.removed = 0  # by remove(): uploaded, or refused by the fleet
        # Called (from the writing thread, outside the lock) after each new snapshot.
        self.on_put: Callable[[], None] | None = None
        with self._lock:
            self._trim(0)

    def __len__(self) -> int:
        return len(self._files)

    def put(self, name: str, data: bytes) -> dict[str, Any]:
        """Store `data` as `name` (a file name) and return the event's `snapshot` reference."""
        path = self.folder / name
        tmp = path.with_suffix(".tmp")
        sha256 = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._trim(len(data))
            tmp.write_bytes(data)
            os.replace(tmp, path)
            self._files.append((path, len(data), sha256))
            self.total_bytes += len(data)
            self.stored += 1
        if self.on_put is not None:
            self.on_put()
        return {
            "ref": f"{self.ref_prefix}/{name}",
            "sha256": sha256,
            "bytes": len(data),
            "type": "image/jpeg",
        }

    def oldest(self) -> tuple[Path, str | None] | None:
        """The oldest snapshot's file and the SHA-256 its event carries (None for a file found at
        start), or None when the store is empty."""
        with self._lock:
            if not self._files:
                return None
            path, _, sha256 = self._files[0]
            return path, sha256

    def remove(self, name: str) -> bool:
        """Delete the snapshot `name` (a file name); False if the store no longer has it (the
        bounds may have deleted it meanwhile)."""
        with self._lock:
            for index, (path, size, _) in enumerate(self._files):
                if path.name == name:
                    del self._files[index]
                    path.unlink(missing_ok=True)
                    self.total_bytes -= size
                    self.removed += 1
                    return True
        return False

    def _trim(self, incoming: int) -> None:
        extra = 1 if incoming else 0
        while self._files and (
            self.total_bytes + incoming > self.max_bytes or len(self._files) + extra > self.max_files
        ):
            oldest, size, _ = self._files.popleft()
            oldest.unlink(missing_ok=True)
            self.total_bytes -= size
            self.deleted += 1
