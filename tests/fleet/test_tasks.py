"""Stopping background tasks (fleet/tasks.py): a task whose cancellation was lost is cancelled
again, and one that never stops is reported instead of hanging the shutdown."""

import asyncio
import logging
import sys

import pytest

from fleet.tasks import stop_tasks, turn_to_end


async def test_a_task_that_loses_a_cancellation_in_wait_for_is_stopped_by_the_next() -> None:
    """The way Python 3.11's `asyncio.wait_for` loses a cancellation: its awaitable finishes in the
    same turn of the loop as the cancel. The looping task then carries on, as aiomqtt's publish did
    in the herd that hung tests/fleet/test_instances.py."""
    turns = 0
    answer: asyncio.Future[None] | None = None

    async def publisher() -> None:
        nonlocal turns, answer
        while True:
            answer = asyncio.get_running_loop().create_future()
            turns += 1
            await asyncio.wait_for(answer, 10)

    task = asyncio.create_task(publisher(), name="publisher")
    await asyncio.sleep(0)
    assert answer is not None and turns == 1
    answer.set_result(None)  # the "PUBACK" and the cancel in one turn
    task.cancel()
    await asyncio.sleep(0.05)
    if sys.version_info < (3, 12):
        assert not task.done() and turns == 2, "the lost cancellation this module is for"
    left = await stop_tasks([task], wait_s=0.2)
    assert left == set() and task.cancelled()


async def test_a_task_that_never_stops_is_returned_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    cancels = 0
    released = False

    async def stubborn() -> None:
        nonlocal cancels
        while not released:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancels += 1

    task = asyncio.create_task(stubborn(), name="stubborn")
    done = asyncio.create_task(asyncio.sleep(10), name="obedient")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="fleet.tasks"):
        left = await stop_tasks([task, done, None], wait_s=0.05, attempts=3)
    assert left == {task} and cancels == 3 and done.cancelled()
    assert "stubborn did not stop after 3 cancellations" in caplog.text
    released = True  # it ends at its next cancellation
    assert await stop_tasks([task]) == set()


async def test_an_error_a_task_ends_with_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def failing() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            raise RuntimeError("closing the socket failed")

    task = asyncio.create_task(failing(), name="failing")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="fleet.tasks"):
        assert await stop_tasks([task]) == set()
    assert "failing ended with an error while stopping" in caplog.text
    assert "closing the socket failed" in caplog.text


async def test_a_stop_lets_the_turn_in_progress_end_before_the_loop_does() -> None:
    """A loop stopped mid-turn: the turn finishes (here: releases the lock it holds, as a transaction
    would), even through the repeated cancellations of stop_tasks, and then the loop ends."""
    lock = asyncio.Lock()
    inside = asyncio.Event()
    turns_ended = 0

    async def turn() -> None:
        nonlocal turns_ended
        async with lock:
            inside.set()
            await asyncio.sleep(0.3)  # the transaction's statements
        turns_ended += 1

    async def loop() -> None:
        while True:
            await turn_to_end(turn())
            await asyncio.sleep(10)

    task = asyncio.create_task(loop(), name="loop")
    await inside.wait()
    assert await stop_tasks([task], wait_s=0.05, attempts=20) == set()  # cancelled again every 50 ms meanwhile
    assert task.cancelled() and turns_ended == 1 and not lock.locked()


async def test_a_turn_that_outlasts_the_stop_is_cancelled() -> None:
    ended = asyncio.Event()

    async def endless() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ended.set()

    task = asyncio.create_task(turn_to_end(endless(), finish_s=0.2))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()


async def test_a_turn_error_reaches_the_loop() -> None:
    async def failing() -> None:
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        await turn_to_end(failing())
