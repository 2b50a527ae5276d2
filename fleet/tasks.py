"""Stopping background tasks on shutdown, including one whose cancellation was lost.

Python 3.11's `asyncio.wait_for` returns its awaitable's result and drops a cancellation that
arrives in the same turn of the loop as that result (CPython gh-86296, fixed in 3.12). The fleet's
own code uses `asyncio.timeout` instead, but libraries it uses still call `wait_for` (aiomqtt's
publish, for one). A task that lost its cancellation runs on, and a shutdown that awaits it hangs
for ever (it did, once in a few runs, in a test whose simulated devices publish all the time).
So a stop cancels, waits a bounded time, and cancels again, a bounded number of times; what still
runs after that is logged and left behind rather than waited for."""

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

STOP_WAIT_S = 1.0  # how long one cancellation is given before the next
STOP_ATTEMPTS = 5  # cancellations sent before a task is given up on
TURN_FINISH_S = 3.0  # how long a stop lets a loop's turn in progress end (under STOP_WAIT_S * STOP_ATTEMPTS)

T = TypeVar("T")


async def stop_tasks(tasks: Iterable["asyncio.Task[Any] | None"], *, wait_s: float = STOP_WAIT_S,
                     attempts: int = STOP_ATTEMPTS) -> set["asyncio.Task[Any]"]:
    """Cancel `tasks` and wait for them to end; returns those still running after `attempts`
    cancellations. A task that ended with an exception other than its cancellation has it logged."""
    given = [task for task in tasks if task is not None]
    pending = {task for task in given if not task.done()}
    for attempt in range(attempts):
        if not pending:
            break
        if attempt:
            log.warning("%s did not stop; cancelling again", ", ".join(sorted(t.get_name() for t in pending)))
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait_s)
    for task in given:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("%s ended with an error while stopping", task.get_name(), exc_info=task.exception())
    for task in pending:
        log.error("%s did not stop after %d cancellations; left running", task.get_name(), attempts)
    return pending


async def turn_to_end(work: Awaitable[T], *, finish_s: float = TURN_FINISH_S) -> T:
    """Await one turn of a background loop so that a stop lets the turn end before the loop does.

    A cancellation of the loop while the turn runs waits for the turn (its transactions committed
    or rolled back) for up to `finish_s`, holding any further cancellation meanwhile, then cancels
    the turn if it still runs and stops the loop. Why: cancelled while it starts a transaction,
    Tortoise's SQLite client keeps its transaction lock (its `__aenter__` has no clean-up), and
    every later query of the process waits for ever. That was a fleet whose stop hung at its last
    write (the lease release) after a 100,000-message drain, a worker cancelled at a bad moment."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + finish_s
        while not task.done() and (remaining := deadline - loop.time()) > 0:
            try:
                await asyncio.wait({task}, timeout=remaining)
            except asyncio.CancelledError:
                continue  # a stop's next cancellation: the turn is still let end
        if not task.done():
            log.warning("a turn did not end within %.0f s of the stop; cancelling it", finish_s)
            task.cancel()
        elif not task.cancelled():
            task.exception()  # retrieved: the loop is stopping, its turn's outcome no longer matters
        raise
