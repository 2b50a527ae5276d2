"""Keeps the ingest loop running: a loop that ends while the fleet is not stopping is restarted.

The loop contains every failure it knows of (fleet/ingest/service.py); this is the line behind
that. A dead loop is logged with its cause and restarted after `backoff_min_s`, doubling up to
`backoff_max_s` while it keeps dying (reset once it has run `settled_s`): never a tight crash
loop, never given up. /healthz is 503 while the loop is down.
"""

import asyncio
import logging
import time

from fleet.ingest.service import Ingest

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, ingest: Ingest, stop: asyncio.Event, *, backoff_min_s: float = 1.0,
                 backoff_max_s: float = 60.0, settled_s: float = 60.0) -> None:
        self.ingest = ingest
        self.stop = stop
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.settled_s = settled_s
        self.task: asyncio.Task[None] | None = None  # the ingest loop's current task
        self.restarts = 0
        self.last_death: str | None = None  # why it last ended, in one line
        self.restart_at: float | None = None  # time.monotonic() of the pending restart

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def run(self) -> None:
        """Until the loop ends on its own after `stop` (the queue drained)."""
        delay = self.backoff_min_s
        while True:
            started = time.monotonic()
            task = self.task = asyncio.create_task(self.ingest.run(self.stop), name="fleet-ingest")
            try:
                await asyncio.wait([task])
            except asyncio.CancelledError:  # the fleet itself is being cancelled: take the loop along
                task.cancel()
                raise
            if not task.cancelled() and task.exception() is None:
                return
            error = None if task.cancelled() else task.exception()
            self.last_death = "cancelled" if error is None else f"{type(error).__name__}: {error}"[:300]
            log.critical("the ingest loop died (%s)", self.last_death, exc_info=error)
            if self.stop.is_set():
                return
            if time.monotonic() - started >= self.settled_s:
                delay = self.backoff_min_s
            self.restarts += 1
            self.restart_at = time.monotonic() + delay
            try:
                async with asyncio.timeout(delay):
                    await self.stop.wait()  # stopping meanwhile: restart now, to drain
            except TimeoutError:
                pass
            finally:
                self.restart_at = None
            log.warning("restarting the ingest loop (restart %d)", self.restarts)
            delay = min(delay * 2, self.backoff_max_s)
