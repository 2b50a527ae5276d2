"""The Pi agent loses session.json and comes back to a fleet that stored its old streams (issue 9 §3).

The agent runs as a real process (under faketime for a clock at 2019), against a private
Mosquitto and the fleet's real ingest on SQLite and PostgreSQL. Measured before the fix: the
agent restarted its counter at 0 in both cases, took the same stream numbers again, and the fleet
dropped its new messages as duplicates and ignored its birth.
"""

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from edge.config import write_config
from tests.edge.helpers import ConfigFactory, agent_command, until
from tests.fleet.streams_view import database_url, device_row, gaps, settled_stats, stored_stamps
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe

__all__ = ["database_url"]  # the fixture, imported for pytest

PER_RUN = 15  # numbered messages each run of the agent sends before it is stopped
# libfaketime preloaded into the agent itself (the `faketime` command would stand between the
# test and the agent's signal handler): its clock starts at 2019-01-01 and runs.
LIBFAKETIME = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
CLOCK_2019 = {"LD_PRELOAD": str(LIBFAKETIME[0]) if LIBFAKETIME else "", "FAKETIME": "@2019-01-01 00:00:00",
              "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def _device_messages(probe: Probe, since: int) -> list[tuple[str, dict[str, Any]]]:
    return [(t.rsplit("/", 1)[-1], json.loads(p)) for t, p, _ in list(probe.messages)[since:] if p]


def _numbered(messages: list[tuple[str, dict[str, Any]]]) -> set[tuple[int, int]]:
    return {(m["ses"], m["seq"]) for _, m in messages if "seq" in m}


async def _run(config: Path, probe: Probe, log: list[str], env: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Start the agent, let it send PER_RUN numbered messages, stop it (SIGTERM): what it sent."""
    since = len(probe.messages)
    process = await asyncio.create_subprocess_exec(*agent_command(config), stderr=asyncio.subprocess.PIPE,
                                                   env={**os.environ, **env})
    try:
        await until(lambda: len(_numbered(_device_messages(probe, since))) >= PER_RUN, "the agent's messages",
                    within=30)
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        log.append(err.decode())
        assert process.returncode == 0, log[-1][-2000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    await until(lambda: any(kind == "death" for kind, _ in _device_messages(probe, since)), "its death")
    return _device_messages(probe, since)


@pytest.mark.parametrize("loss", ["deleted", pytest.param("damaged, clock at 2019", marks=pytest.mark.skipif(
    not LIBFAKETIME, reason="needs libfaketime (Debian package faketime)"))])
async def test_an_agent_that_lost_its_counter_has_every_new_message_stored_and_its_birth_applied(
        loss: str, database_url: str, mosquitto: Mosquitto, device_id: str, edge_config: ConfigFactory,
        probe: Probe, tmp_path: Path) -> None:
    agent = edge_config(health_period_s=1, roles={"sim": {"period_s": 0.2, "seed": 7}})
    config = write_config(agent, tmp_path / "agent.toml")
    counter = agent.state_dir / "session.json"
    log: list[str] = []  # each run's stderr
    async with running_fleet(fleet_settings(database_url, mosquitto.url)) as http:
        before = await _run(config, probe, log, {})
        if loss == "deleted":
            counter.unlink()
            after = await _run(config, probe, log, {})
        else:
            counter.write_text('{"ses": 4, "bo')  # a write cut short by a failing card
            after = await _run(config, probe, log, CLOCK_2019)
        stats = await settled_stats(http, received=len(_device_messages(probe, 0)))
        old, new = _numbered(before), _numbered(after)
        stored_new = stats["stored"] - len(old)
        figures = (f"{loss}: {stats['duplicates']} of {len(new)} new messages dropped as duplicates, "
                   f"{stored_new} stored; first run's streams {sorted({s for s, _ in old})}, "
                   f"second run's {sorted({s for s, _ in new})}")
        assert stats["duplicates"] == 0 and stored_new == len(new), figures
        stamps = await stored_stamps(device_id)
        assert sum(stamps.values()) == len(old) + len(new) and max(stamps.values()) == 1
        birth = [m for kind, m in after if kind == "birth"][-1]
        assert (await device_row(device_id)).birth == birth, "the new birth was applied"
        assert await gaps(device_id) == []
    # what the agent did about it: a random 48-bit restart (as a new agent's first start was)
    assert min(s for s, _ in new) > 2**47 and not {s for s, _ in new} & {s for s, _ in old}
    assert "no session counter" in log[-1]
    # and its birth says how far the stream before the connection (the boot stream) went
    boot_stream = birth["prev"]["ses"]
    assert birth["prev"]["next_seq"] == len({q for s, q in new if s == boot_stream}) > 0
    if loss != "deleted":
        assert birth["ts"] is None and all(m["ts"] is None for _, m in after), "the clock was at 2019"
        assert list(counter.parent.glob("session.json.corrupt-*")), "the damaged file was kept aside"
