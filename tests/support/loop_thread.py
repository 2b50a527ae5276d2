"""A service on its own event loop in a thread, for tests that block the test's own loop (paho's
waits, CONNACK waits) while that service must keep serving."""

import asyncio
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Generic, TypeVar

T = TypeVar("T")


class LoopThread(Generic[T]):
    """Enters `open_service()` on a new loop in a thread; `start` waits until it is entered and
    returns what it yields (or raises what made it fail); `stop` leaves it and joins the thread."""

    def __init__(self, name: str, open_service: Callable[[], AbstractAsyncContextManager[T]]) -> None:
        self._open = open_service
        self._ready = threading.Event()
        self._failure: list[BaseException] = []
        self._value: list[T] = []
        self._stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name=name, daemon=True)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        try:
            async with self._open() as value:
                self._value.append(value)
                self._ready.set()
                await self._stop.wait()
        except BaseException as err:  # reported to the test by start()
            self._failure.append(err)
            self._ready.set()

    def start(self, timeout: float) -> T:
        self._thread.start()
        self._ready.wait(timeout)
        if self._failure:
            raise self._failure[0]
        if not self._value:
            raise TimeoutError(f"{self._thread.name} did not start within {timeout} s")
        return self._value[0]

    def stop(self, timeout: float) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
