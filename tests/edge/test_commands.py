"""Commands through a real Mosquitto: results, duplicates, expiry, unknown names, role commands."""

import time

from contract import make_command
from edge.agent import EXIT_RESTART, Agent
from tests.edge.helpers import ConfigFactory, results_for, until
from tests.support.mqtt_probe import Probe


def send(
    probe: Probe,
    device_id: str,
    command_id: str,
    name: str,
    args: dict | None = None,
    *,
    expires_in_s: float = 60,
) -> None:
    exp = int((time.time() + expires_in_s) * 1000)
    topic, payload = make_command(device_id, command_id, name, args or {}, exp)
    probe.publish(topic, payload)


async def answer(probe: Probe, command_id: str, count: int = 1) -> list[dict]:
    return await until(
        lambda: len(r := results_for(probe, command_id)) >= count and r, f"{count} result(s) for {command_id}"
    )


async def test_ping_is_answered_ok(edge_config: ConfigFactory, probe: Probe, device_id: str) -> None:
    async with Agent(edge_config()) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        send(probe, device_id, "c-ping", "ping")
        (result,) = await answer(probe, "c-ping")
    assert result["status"] == "ok" and result["detail"]["up_s"] >= 0
    assert {"v", "ses", "seq", "ts"} <= set(result)


async def test_set_health_period_changes_the_period(
    edge_config: ConfigFactory, probe: Probe, device_id: str
) -> None:
    async with Agent(edge_config()) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        send(probe, device_id, "c-period", "set_health_period", {"period_s": 7})
        (result,) = await answer(probe, "c-period")
        assert agent.health_period_s == 7
        send(probe, device_id, "c-bad-period", "set_health_period", {"period_s": 0})
        (refused,) = await answer(probe, "c-bad-period")
        assert agent.health_period_s == 7
    assert result["status"] == "ok" and result["detail"] == {"period_s": 7}
    assert refused["status"] == "error" and "period_s" in refused["detail"]


async def test_duplicate_command_is_answered_again_not_run_again(
    edge_config: ConfigFactory, probe: Probe, device_id: str
) -> None:
    async with Agent(edge_config()) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        send(probe, device_id, "c-dup", "sim.spike", {"pm25": 80})
        await answer(probe, "c-dup")
        send(probe, device_id, "c-dup", "sim.spike", {"pm25": 80})
        first, second = await answer(probe, "c-dup", 2)
        assert agent.commands.executed == 1
    assert first["status"] == second["status"] == "ok"
    assert first["detail"] == second["detail"]
    assert (first["ses"], first["seq"]) != (second["ses"], second["seq"]), "the answer is a new message"

    # The memory of answered commands is in the state folder: a restart does not re-run it either.
    async with Agent(edge_config()) as restarted:
        await until(restarted.link.connected.is_set, "the agent to reconnect")
        send(probe, device_id, "c-dup", "sim.spike", {"pm25": 80})
        await answer(probe, "c-dup", 3)
        assert restarted.commands.executed == 0


async def test_expired_and_unknown_commands(edge_config: ConfigFactory, probe: Probe, device_id: str) -> None:
    async with Agent(edge_config()) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        send(probe, device_id, "c-late", "set_health_period", {"period_s": 9}, expires_in_s=-5)
        send(probe, device_id, "c-what", "make_coffee")
        (late,) = await answer(probe, "c-late")
        (what,) = await answer(probe, "c-what")
        assert agent.health_period_s == 1, "an expired command is not run"
    assert late["status"] == "expired"
    assert what["status"] == "unknown"


async def test_malformed_command_with_an_id_is_answered_error(
    edge_config: ConfigFactory, probe: Probe, device_id: str
) -> None:
    async with Agent(edge_config()) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        probe.publish(f"ioc/v1/d/{device_id}/cmd", b'{"v": 1, "id": "c-bad", "name": "ping"}')
        (result,) = await answer(probe, "c-bad")
    assert result["status"] == "error" and "malformed" in result["detail"]


async def test_role_command_reaches_the_role(
    edge_config: ConfigFactory, probe: Probe, device_id: str
) -> None:
    async with Agent(edge_config(roles={"sim": {"pm25_alert": 55}})) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        send(probe, device_id, "c-spike", "sim.spike", {"pm25": 300})
        (result,) = await answer(probe, "c-spike")
        events = await until(lambda: probe.payloads("event"), "the air-quality event")
    assert result["status"] == "ok" and result["detail"] == {"pm25": 300.0}
    assert events[0]["type"] == "air_quality" and events[0]["phase"] == "start"
    assert events[0]["category"] == "other"


async def test_reboot_answers_then_exits_for_a_restart(
    edge_config: ConfigFactory, probe: Probe, device_id: str
) -> None:
    async with Agent(edge_config()) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        send(probe, device_id, "c-reboot", "reboot")
        assert await agent.wait() == EXIT_RESTART
    (result,) = await answer(probe, "c-reboot")
    assert result["status"] == "ok"
    deaths = await until(lambda: probe.payloads("death"), "the death")
    assert deaths[-1]["reason"] == "shutdown"
