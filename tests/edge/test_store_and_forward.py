"""Store and forward through a broker restart: nothing lost, every stream in order.

The sim role sends telemetry every 5 ms. The broker is stopped while the agent keeps producing
into its queue, then started again on the same port with its persistence. A persistent-session
observer must end up with every (ses, seq) the agent stamped, each stream in order.
"""

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.agent import Agent
from edge.roles.sim import SimRole
from tests.edge.helpers import ConfigFactory, numbered, until
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe

OUTAGE_MESSAGES = 1000  # produced into the queue while the broker is down


@pytest.fixture
def observer(mosquitto: Mosquitto, device_id: str) -> Iterator[Probe]:
    """A persistent-session observer: the broker keeps its subscription and queued messages
    across the restart (Mosquitto's persistence is on in the shared fixture)."""
    probe = Probe(mosquitto.port, f"ioc/v1/d/{device_id}/#", persistent=True)
    yield probe
    probe.close()


def stamped(probe: Probe) -> list[dict[str, Any]]:
    """Every message carrying a (ses, seq) stamp, in arrival order (duplicates included)."""
    bodies = [json.loads(payload) for _topic, payload, _retained in list(probe.messages) if payload]
    return [body for body in bodies if "seq" in body]


def telemetry_count(probe: Probe) -> int:
    """Distinct telemetry stamps received."""
    return len({(b["ses"], b["seq"]) for b in numbered(probe, "telemetry")})


def check_streams(arrivals: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stream: which seq are missing, and whether first arrivals came in order."""
    first_seen: dict[int, list[int]] = defaultdict(list)
    seen: set[tuple[int, int]] = set()
    duplicates = 0
    for body in arrivals:
        stamp = (body["ses"], body["seq"])
        if stamp in seen:
            duplicates += 1
            continue
        seen.add(stamp)
        first_seen[body["ses"]].append(body["seq"])
    missing = {ses: sorted(set(range(max(seqs) + 1)) - set(seqs)) for ses, seqs in first_seen.items()}
    out_of_order = [ses for ses, seqs in first_seen.items() if seqs != sorted(seqs)]
    return {
        "unique": len(seen),
        "duplicates": duplicates,
        "streams": sorted(first_seen),
        "missing": {s: m for s, m in missing.items() if m},
        "out_of_order": out_of_order,
    }


async def test_broker_restart_loses_nothing_and_replays_in_order(
    edge_config: ConfigFactory, mosquitto: Mosquitto, observer: Probe, artifacts_dir: Path
) -> None:
    config = edge_config(roles={"sim": {"period_s": 0.005}}, health_period_s=1)
    async with Agent(config) as agent:
        sim = agent.roles["sim"]
        assert isinstance(sim, SimRole)
        await until(lambda: telemetry_count(observer) >= 200, "telemetry to flow")

        await asyncio.to_thread(mosquitto.stop)
        await until(lambda: not agent.link.connected.is_set(), "the agent to notice the outage")
        depth_before = agent.outbox.depth
        await until(
            lambda: agent.outbox.depth >= depth_before + OUTAGE_MESSAGES,
            "the queue to grow during the outage",
        )
        queued_in_outage = agent.outbox.depth

        await asyncio.to_thread(mosquitto.start)
        await until(lambda: agent.link.connections >= 2, "the agent to reconnect", within=20)
        await until(lambda: agent.outbox.depth < 20, "the queue to drain after the outage", within=20)
    # The agent stopped cleanly: it drained its queue, so everything it made has been sent.
    assert agent.outbox.depth == 0
    produced = sim.readings_sent
    await until(lambda: telemetry_count(observer) >= produced, f"all {produced} readings", within=20)
    assert "Error saving" not in mosquitto.log.read_text(), "the observer's session must survive"

    report = check_streams(stamped(observer))
    lost_telemetry = produced - telemetry_count(observer)
    lost_stamps = sum(len(m) for m in report["missing"].values())
    print(
        f"\nstore-and-forward: {produced} telemetry produced, {queued_in_outage} queued during the "
        f"outage; {report['unique']} stamped messages received in {len(report['streams'])} streams, "
        f"{report['duplicates']} duplicates; lost: {lost_telemetry + lost_stamps}"
    )
    (artifacts_dir / "edge-store-and-forward.json").write_text(
        json.dumps(
            {
                "telemetry_produced": produced,
                "queued_during_outage": queued_in_outage,
                "stamped_received": report["unique"],
                "duplicates": report["duplicates"],
                "streams": report["streams"],
                "lost": lost_telemetry + lost_stamps,
            },
            indent=1,
        )
    )
    assert lost_telemetry == 0
    assert report["missing"] == {}, "a gap in a stream is a lost message"
    assert report["out_of_order"] == []
    assert agent.outbox.dropped == 0


async def test_queue_outlives_the_agent_during_an_outage(
    edge_config: ConfigFactory, mosquitto: Mosquitto, observer: Probe
) -> None:
    config = edge_config(roles={"sim": {"period_s": 0.005}}, shutdown_drain_s=0)
    await asyncio.to_thread(mosquitto.stop)
    async with Agent(config) as offline:
        await until(lambda: offline.outbox.depth >= 300, "messages to queue up offline")
    left_behind = offline.outbox.depth
    produced = offline.roles["sim"].readings_sent
    assert left_behind >= 300

    await asyncio.to_thread(mosquitto.start)
    async with Agent(config.model_copy(update={"roles": {}})) as restarted:
        await until(
            lambda: restarted.outbox.depth == 0 and telemetry_count(observer) >= produced,
            f"the {produced} readings of the previous run",
            within=20,
        )
    report = check_streams(stamped(observer))
    print(
        f"\nrestart during an outage: {produced} readings made offline, all delivered by the next run; "
        f"lost: {sum(len(m) for m in report['missing'].values())}"
    )
    assert telemetry_count(observer) == produced
    assert report["missing"] == {} and report["out_of_order"] == []
