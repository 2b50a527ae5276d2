"""Background work in one task: each part's `tick(now)` runs in turn every `tick_s`; one part's
failure is logged (with a traceback the first time) and does not stop the others or the next
turn. `nudge()` runs a turn at once instead of waiting out the tick."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fleet.tasks import turn_to_end

log = logging.getLogger(__name__)

Tick = Callable[[datetime], Awaitable[None]]


class PartsWorker:
    def __init__(self, label: str, *, tick_s: float = 1.0) -> None:
        self.label = label
        self.tick_s = tick_s
        self._wake = asyncio.Event()
        self.parts: list[tuple[str, Tick]] = []  # (name, tick), run in this order
        self._failed: set[str] = set()  # parts whose failure was logged with a traceback

    def nudge(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await turn_to_end(self.turn())
            try:
                async with asyncio.timeout(self.tick_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def turn(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        for name, tick in self.parts:
            try:
                await tick(now)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if name in self._failed:
                    log.error("%s: %s failed (%s: %.200s); carrying on", self.label, name, type(err).__name__, err)
                else:
                    self._failed.add(name)
                    log.error("%s: %s failed; carrying on", self.label, name, exc_info=err)
