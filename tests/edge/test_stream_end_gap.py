"""Messages lost at the end of a stream show as a gap once the agent's next birth says how far it went
(issue 9 §5).

The loss, with real processes: the fleet stops (its persistent session keeps collecting at the
broker), the agent goes on sending in its stream until the broker has acknowledged every message
it stamped, and Mosquitto is killed there (SIGKILL: what it held for the fleet is gone, and the
agent has nothing left to send again). A new fleet starts on the same database; the agent
reconnects in a new stream, and its birth carries `prev`. No later message of the old stream
arrives, so without `prev` these losses show nowhere.

The agent runs in the test's event loop with no role and one health report (at start): the test
makes its messages (`Uplink.telemetry`), so none is made in the old stream during the outage (one
would be sent after the reconnect and reveal the gap the ordinary way).
"""

from pathlib import Path

import httpx

from edge.agent import Agent
from tests.edge.helpers import ConfigFactory, until
from tests.fleet.streams_view import database_url, gaps, stored_stamps
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

__all__ = ["database_url"]  # the fixture, imported for pytest

BEFORE, LOST, AFTER = 12, 10, 3  # messages made with the fleet there, while it is away, in the new stream


async def _subscribed(http: httpx.AsyncClient) -> None:
    async def subscribed() -> bool:
        return bool((await http.get("/healthz")).json().get("subscribed"))

    await async_wait_for(subscribed, what="the fleet subscribed")


async def _stored(device_id: str, ses: int) -> set[int]:
    return {q for _, s, q in await stored_stamps(device_id) if s == ses}


async def test_a_loss_at_the_end_of_the_agents_stream_shows_as_a_gap_with_its_exact_range(
        database_url: str, mosquitto: Mosquitto, device_id: str, edge_config: ConfigFactory,
        tmp_path: Path) -> None:
    first_fleet = running_fleet(fleet_settings(database_url, mosquitto.url))
    await _subscribed(await first_fleet.__aenter__())  # before the agent: it stores the stream from 0
    first_fleet_up = True
    try:
        async with Agent(edge_config(health_period_s=86_400, roles={})) as agent:
            await until(agent.link.connected.is_set, "the agent to connect")
            stream = agent.stamper.ses
            for n in range(BEFORE):
                agent.uplink.telemetry("sim", {"n": n})

            async def stored_some() -> bool:
                return len(await _stored(device_id, stream)) >= BEFORE

            await async_wait_for(stored_some, what="the fleet to store part of the stream")
            first_fleet_up = False
            await first_fleet.__aexit__(None, None, None)
            # the fleet is gone; the agent sends on, and the broker acknowledges
            for n in range(LOST):
                agent.uplink.telemetry("sim", {"n": BEFORE + n})
            await until(lambda: agent.outbox.depth == 0, "the broker to acknowledge them")
            made = agent.stamper.next_seq
            mosquitto.kill()
            mosquitto.start()
            async with running_fleet(fleet_settings(database_url, mosquitto.url)) as http:
                await _subscribed(http)  # the new stream's messages below must reach it
                await until(lambda: agent.stamper.ses != stream, "a new connection, a new stream")
                told = getattr(agent.stamper, "prev", None)  # what its birth says (None: an agent without prev)
                new_stream = agent.stamper.ses
                for n in range(AFTER):
                    agent.uplink.telemetry("sim", {"n": n})

                async def new_stream_stored() -> bool:
                    return len(await _stored(device_id, new_stream)) >= AFTER

                await async_wait_for(new_stream_stored, timeout=30, what="messages of the new stream stored")
                stored = await _stored(device_id, stream)
                found = [g for g in await gaps(device_id) if g[1] == stream]
    finally:
        if first_fleet_up:
            await first_fleet.__aexit__(None, None, None)
    lost = sorted(set(range(made)) - stored)
    figures = f"{len(lost)} messages lost at the end of stream {stream}, shown as a gap: {found}"
    assert len(lost) >= LOST and lost == list(range(lost[0], made)), figures  # the agent may add its own
    assert found == [(0, stream, lost[0], made - 1, True)], figures
    assert told == {"ses": stream, "next_seq": made}
