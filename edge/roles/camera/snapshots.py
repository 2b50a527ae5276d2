"""The snapshot store: JPEG files in a bounded folder, referenced from events by name.

Bound and policy: at most `max_bytes` and `max_files`; a new snapshot that would pass either
bound deletes the oldest ones first (the newest are what the IOC asks for). Files are written
to a temporary name and renamed, so a crash leaves no half-written JPEG behind a reference.
Uploading snapshots to the fleet is a later issue; until then they wait here.
"""

import hashlib
import os
import threading
from collections import deque
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
        self._files: deque[tuple[Path, int]] = deque((p, p.stat().st_size) for p in existing)
        self.total_bytes = sum(size for _, size in self._files)
        self.deleted = 0
        self.stored = 0
        with self._lock:
            self._trim(0)

    def __len__(self) -> int:
        return len(self._files)

    def put(self, name: str, data: bytes) -> dict[str, Any]:
        """Store `data` as `name` (a file name) and return the event's `snapshot` reference."""
        path = self.folder / name
        tmp = path.with_suffix(".tmp")
        with self._lock:
            self._trim(len(data))
            tmp.write_bytes(data)
            os.replace(tmp, path)
            self._files.append((path, len(data)))
            self.total_bytes += len(data)
            self.stored += 1
        return {
            "ref": f"{self.ref_prefix}/{name}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "type": "image/jpeg",
        }

    def _trim(self, incoming: int) -> None:
        extra = 1 if incoming else 0
        while self._files and (
            self.total_bytes + incoming > self.max_bytes or len(self._files) + extra > self.max_files
        ):
            oldest, size = self._files.popleft()
            oldest.unlink(missing_ok=True)
            self.total_bytes -= size
            self.deleted += 1
