"""The desired-state document: stored, applied, reported, and kept across a restart."""

import json

from contract import make_desired
from edge.agent import Agent
from tests.edge.helpers import ConfigFactory, numbered, until
from tests.support.mqtt_probe import Probe


def reports(probe: Probe) -> list[dict]:
    return numbered(probe, "state/reported")


async def test_desired_state_is_applied_stored_reported_and_survives_a_restart(
    edge_config: ConfigFactory, probe: Probe, device_id: str
) -> None:
    topic, payload = make_desired(device_id, 3, {"health_period_s": 7, "lights": {"later": True}})
    probe.publish(topic, payload, retain=True)
    async with Agent(edge_config()) as agent:
        (report,) = await until(lambda: reports(probe), "the report of version 3")
        assert agent.health_period_s == 7
        state_file = agent.config.state_dir / "desired.json"
    assert report["version"] == 3 and report["status"] == "applied"
    assert json.loads(state_file.read_text())["doc"]["health_period_s"] == 7

    probe.publish(topic, b"", retain=True)  # the broker forgets it; the device must not
    async with Agent(edge_config()) as restarted:
        assert restarted.health_period_s == 7, "runs from the stored copy before any connection"
        await until(restarted.link.connected.is_set, "the agent to reconnect")
        births = await until(
            lambda: [b for b in probe.payloads("birth") if b["boot"]["n"] == 2], "the second birth"
        )
        assert births[0]["period_s"] == 7


async def test_bad_newer_version_is_rejected_and_the_old_one_kept(
    edge_config: ConfigFactory, probe: Probe, device_id: str
) -> None:
    async with Agent(edge_config()) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        probe.publish(*make_desired(device_id, 3, {"health_period_s": 5}), retain=True)
        await until(lambda: len(reports(probe)) >= 1, "the report of version 3")
        probe.publish(*make_desired(device_id, 4, {"health_period_s": "often"}), retain=True)
        await until(lambda: len(reports(probe)) >= 2, "the report of version 4")
        probe.publish(*make_desired(device_id, 2, {"health_period_s": 60}), retain=True)
        applied, rejected, older = await until(
            lambda: len(r := reports(probe)) >= 3 and r, "the report of version 2"
        )
        assert agent.health_period_s == 5
    assert (applied["version"], applied["status"]) == (3, "applied")
    assert (rejected["version"], rejected["status"]) == (4, "rejected")
    assert "health_period_s" in rejected["error"]
    assert (older["version"], older["status"]) == (3, "applied"), "an older document changes nothing"
