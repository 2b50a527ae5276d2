"""Snapshots to the fleet: every image in the store, oldest first, as the device (docs/relay.md,
"The Pi's side"; docs/edge-camera.md, "Uploads").

`PUT {fleet}/api/devices/{device}/snapshots/{sha256}`, the body the file as it is now, `sha256` the
hash recorded when the store wrote it (the one its event carries), so a file changed on the card
since is refused by the fleet (422) rather than stored under a hash no event names. A file the
store found at start (written before a restart) has no recorded hash: it is hashed as it is read.
What the fleet answers decides the image's fate:

- 200, 201 (the fleet holds it): deleted from the store, counted `uploaded`; the next one at once,
  and the backoff starts again from its minimum;
- 400, 413, 422 (no retry can cure it: not a JPEG, too large, changed on the card): deleted,
  counted `upload_refused` (so is a file the Pi cannot read); the next one at once;
- anything else (401, 403, 404, 507, 5xx, a redirect) or no answer: kept, counted `upload_errors`;
  wait `[fleet] backoff_min_s` (1 s) doubling to `backoff_max_s` (300 s), each delay drawn from
  [d/2, d], then the same image again. When the answer carries a longer `Retry-After` (the fleet's
  429 after failed device logins, a 503), that is waited instead, at most RETRY_AFTER_MAX_S (1 h).

A new snapshot wakes a waiting uploader at once, but not one that is backing off: it waits its
delay out (a new image does not make the fleet reachable). Bound: the store's own
(`snapshot_max_mb`, `snapshot_max_files`): while the fleet is unreachable, new snapshots delete
the oldest ones as ever. The requests are blocking and run in a worker thread, one at a time.
"""

import asyncio
import hashlib
import logging
from enum import Enum
from pathlib import Path

from edge.backoff import Backoff
from edge.fleet_http import FleetHttp, FleetUnreachable
from edge.roles.camera.snapshots import SnapshotStore

STORED = (200, 201)
REFUSED = (400, 413, 422)  # the image itself is the problem: sending it again cannot help
RETRY_AFTER_MAX_S = 3600.0  # the longest Retry-After obeyed (a fleet's mistake must not park uploads for days)


class Outcome(Enum):
    DONE = "done"  # the image left the store (uploaded, refused, gone)
    RETRY = "retry"  # the image stays; back off


class SnapshotUploader:
    def __init__(self, store: SnapshotStore, fleet: FleetHttp, *, log: logging.Logger,
                 backoff: Backoff | None = None) -> None:
        self.store = store
        self.fleet = fleet
        self.log = log
        settings = fleet.settings
        self.backoff = backoff or Backoff(settings.backoff_min_s, settings.backoff_max_s)
        self.uploaded = 0
        self.refused = 0
        self.errors = 0
        self._retry_after_s: float | None = None  # the last failed answer's Retry-After
        self._problem: str | None = None  # the last failure logged, so an outage is one line, not one per retry

    def figures(self) -> dict[str, int]:
        return {
            "uploaded": self.uploaded,
            "upload_errors": self.errors,
            "upload_refused": self.refused,
            "upload_pending": len(self.store),
        }

    async def run(self) -> None:
        """Upload until cancelled; the store's `on_put` wakes it."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def nudge() -> None:  # from a camera's worker thread
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop is closed: the agent is stopping
                pass

        self.store.on_put = nudge
        try:
            while True:
                wake.clear()
                oldest = self.store.oldest()
                if oldest is None:
                    await wake.wait()
                    continue
                if await asyncio.to_thread(self.upload_one, *oldest) is Outcome.RETRY:
                    delay = self.backoff.next_delay()
                    if self._retry_after_s is not None:
                        delay = max(delay, min(self._retry_after_s, RETRY_AFTER_MAX_S))
                    await asyncio.sleep(delay)
        finally:
            self.store.on_put = None

    def upload_one(self, path: Path, recorded_sha256: str | None) -> Outcome:
        """One image, blocking (a worker thread)."""
        name = path.name
        self._retry_after_s = None
        try:
            body = path.read_bytes()
        except FileNotFoundError:  # the store's bound deleted it meanwhile
            self.store.remove(name)
            return Outcome.DONE
        except OSError as err:  # unreadable will not become readable: do not block the rest behind it
            self.store.remove(name)
            self.refused += 1
            self.log.warning("snapshot %s cannot be read (%s); deleted", name, err.strerror or err)
            return Outcome.DONE
        sha256 = recorded_sha256 or hashlib.sha256(body).hexdigest()
        target = self.fleet.path("api", "devices", self.fleet.device_id, "snapshots", sha256)
        try:
            answer = self.fleet.put(target, body, "image/jpeg")
        except FleetUnreachable as err:
            self._failed(f"the fleet is unreachable ({err})")
            return Outcome.RETRY
        if answer.status in STORED:
            self.store.remove(name)
            self.uploaded += 1
            self.backoff.reset()
            if self._problem is not None:
                self.log.info("snapshot uploads work again")
                self._problem = None
            return Outcome.DONE
        detail = _detail(answer.body)
        if answer.status in REFUSED:
            self.store.remove(name)
            self.refused += 1
            self.log.warning("the fleet refused snapshot %s (HTTP %d%s); deleted", name, answer.status, detail)
            return Outcome.DONE
        self._retry_after_s = answer.retry_after_s
        self._failed(f"the fleet answered HTTP {answer.status}{detail}")
        return Outcome.RETRY

    def _failed(self, problem: str) -> None:
        self.errors += 1
        if problem != self._problem:
            self.log.warning("snapshot upload: %s; kept, retrying with backoff", problem)
            self._problem = problem


def _detail(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()[:120]
    return f": {text}" if text else ""
