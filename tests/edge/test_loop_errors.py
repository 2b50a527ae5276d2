"""The agent's event-loop error handler (edge/cli.py): the race where aiomqtt registers a socket
that paho has just closed (the broker went away) is one warning line; other errors keep asyncio's
report with its traceback."""

import asyncio
import logging

import pytest

from edge.cli import loop_exception


async def _run_one(callback: object, *args: object) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(loop_exception)
    loop.call_soon(callback, *args)  # type: ignore[arg-type]
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_closed_socket_registered_late_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.WARNING):
        await _run_one(loop.add_writer, -1, lambda: None)  # what a closed socket's fileno() gives
    warnings = [r for r in caplog.records if "the MQTT socket closed" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info]


async def test_other_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR):
        await _run_one(broken)
    reported = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert len(reported) == 1
