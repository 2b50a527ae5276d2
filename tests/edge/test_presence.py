"""Birth, health and death against a real private Mosquitto, in process and as a real process."""

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from contract import parse_upstream
from contract.examples import valid_examples
from edge.agent import Agent
from edge.config import write_config
from edge.errors import StateError
from edge.launch import run_agents, sim_config
from tests.edge.helpers import ConfigFactory, agent_command, numbered, until
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe
from tests.support.wait import wait_for

EXAMPLES = valid_examples()


def received(probe: Probe, suffix: str) -> list[tuple[dict, bool]]:
    """(payload, retained flag) of the messages on `suffix`."""
    return [(json.loads(p), r) for t, p, r in list(probe.messages) if t.endswith("/" + suffix) and p]


async def test_retained_birth_carries_the_connection_stream(
    edge_config: ConfigFactory, mosquitto: Mosquitto, device_id: str
) -> None:
    async with Agent(edge_config()) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        late = Probe(mosquitto.port, f"ioc/v1/d/{device_id}/birth")  # subscribes after the birth
        try:
            births = await until(lambda: received(late, "birth"), "the retained birth")
        finally:
            late.close()
        birth, retained = births[0]
        assert retained
        assert birth["ses"] == agent.stamper.ses > agent.boot.ses, "a new stream per connection"
        assert birth["kind"] == "pi" and birth["roles"] == ["sim"]
        assert birth["boot"] == {"n": 1, "reason": "start"}
        assert birth["period_s"] == 1 and birth["next_seq"] == 0
        assert set(birth) == set(EXAMPLES["birth.pi"]["payload"])
        parse_upstream(f"ioc/v1/d/{device_id}/birth", json.dumps(birth).encode())


async def test_health_comes_on_its_period_with_growing_seq(
    edge_config: ConfigFactory, probe: Probe, device_id: str
) -> None:
    async with Agent(edge_config()):
        health = await until(lambda: len(h := numbered(probe, "health")) >= 3 and h, "three health messages")
    expected = set(EXAMPLES["health.pi"]["payload"]) - {"temp_c"} | {"dropped", "roles"}
    for message in health:
        assert expected <= set(message), expected - set(message)
        parse_upstream(f"ioc/v1/d/{device_id}/health", json.dumps(message).encode())
    stamps = [(m["ses"], m["seq"]) for m in health]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    last = health[-1]
    assert last["fw"] and last["up_s"] >= 0 and last["dropped"] == 0 and last["reconnects"] == 0
    assert last["roles"]["sim"]["readings"] >= 1


async def test_clean_stop_publishes_a_shutdown_death(edge_config: ConfigFactory, probe: Probe) -> None:
    async with Agent(edge_config()) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        ses = agent.stamper.ses
    deaths = await until(lambda: probe.payloads("death"), "the death")
    assert deaths[-1]["reason"] == "shutdown" and deaths[-1]["ses"] == ses
    assert agent.outbox.depth == 0, "the stop drained the queue"


def test_will_after_kill_9_has_the_birth_stream(
    edge_config: ConfigFactory, probe: Probe, tmp_path: Path
) -> None:
    secret = "s3cret-not-for-logs"
    config = write_config(edge_config(broker={"username": "pi", "password": secret}), tmp_path / "agent.toml")
    log = (tmp_path / "agent.log").open("w+")
    process = subprocess.Popen(agent_command(config, "--log-level", "debug"), stderr=log)
    try:
        birth = wait_for(lambda: probe.payloads("birth"), what="the birth")[-1]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        death = wait_for(lambda: probe.payloads("death"), what="the will")[-1]
    finally:
        if process.poll() is None:
            process.kill()
    assert death == {"v": 1, "ses": birth["ses"], "ts": None, "reason": "lost"}
    log.seek(0)
    text = log.read()
    assert "connected to" in text and secret not in text


def test_sigterm_stops_the_process_cleanly(edge_config: ConfigFactory, probe: Probe, tmp_path: Path) -> None:
    config = write_config(edge_config(), tmp_path / "agent.toml")
    with (tmp_path / "agent.log").open("w") as log:
        process = subprocess.Popen(agent_command(config), stderr=log)
    try:
        birth = wait_for(lambda: probe.payloads("birth"), what="the birth")[-1]
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    death = wait_for(lambda: probe.payloads("death"), what="the death")[-1]
    assert death["reason"] == "shutdown" and death["ses"] == birth["ses"]


async def test_one_agent_per_state_folder(edge_config: ConfigFactory) -> None:
    config = edge_config()
    async with Agent(config):
        second = Agent(config)
        with pytest.raises(StateError, match="in use by another agent"):
            second.open()


async def test_several_agents_run_in_one_process(mosquitto: Mosquitto, tmp_path: Path) -> None:
    ids = [f"t-multi-{n}" for n in range(3)]
    watcher = Probe(mosquitto.port, "ioc/v1/d/+/birth")
    stop = asyncio.Event()
    try:
        configs = [sim_config(i, mosquitto.url, tmp_path / i, health_period_s=5) for i in ids]
        running = asyncio.create_task(run_agents(configs, stop))
        births = await until(lambda: len(b := {t for t, _, _ in watcher.messages}) == 3 and b, "3 births")
        stop.set()
        assert await running == [0, 0, 0]
    finally:
        watcher.close()
    assert births == {f"ioc/v1/d/{i}/birth" for i in ids}
