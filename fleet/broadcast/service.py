"""The broadcasts' background work in one task (`fleet-broadcasts`): each part's `tick` runs in
turn every `tick_s`; one part's failure is logged and does not stop the others or the next turn.
`nudge()` runs a turn at once (a broadcast saved, a speaker born) instead of waiting out the tick.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fleet.ingest.link import MqttLink
from fleet.settings import Settings

log = logging.getLogger(__name__)

Tick = Callable[[datetime], Awaitable[None]]


class BroadcastWorker:
    def __init__(self, link: MqttLink, settings: Settings, *, tick_s: float = 1.0) -> None:
        self.link = link
        self.settings = settings
        self.tick_s = tick_s
        self._wake = asyncio.Event()
        self.parts: list[tuple[str, Tick]] = []  # (name, tick), run in this order
        self._failed: set[str] = set()  # parts whose failure was logged with a traceback

    def nudge(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self.turn()
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
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
                    log.error("broadcasts: %s failed (%s: %.200s); carrying on", name, type(err).__name__, err)
                else:
                    self._failed.add(name)
                    log.error("broadcasts: %s failed; carrying on", name, exc_info=err)
