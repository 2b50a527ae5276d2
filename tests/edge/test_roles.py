"""The role interface, with a role written here the way later roles (camera, speaker...) will be."""

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from contract import make_command, make_desired
from edge.agent import Agent
from edge.commands import CommandHandler, Reply
from edge.errors import ConfigError, DesiredStateError
from edge.roles import ROLES, Role, RoleContext, RoleSettings, RoleSpec
from tests.edge.helpers import ConfigFactory, numbered, results_for, until
from tests.support.mqtt_probe import Probe


class CounterSettings(RoleSettings):
    fail_first_runs: int = 0


class CounterRole(Role):
    """Counts, fails on purpose at first, takes a command and a desired-state key."""

    def __init__(self, settings: CounterSettings, context: RoleContext) -> None:
        super().__init__(context)
        self.settings = settings
        self.runs = 0
        self.step = 1
        self.count = 0
        self.cancelled = False

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.settings.fail_first_runs:
            raise RuntimeError("sensor not ready")
        try:
            while True:
                self.count += self.step
                self.context.telemetry({"count": self.count})
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def health(self) -> dict[str, int | float]:
        return {"count": self.count}

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"reset": self._reset}

    async def _reset(self, args: Mapping[str, Any]) -> Reply:
        self.count = 0
        return Reply({"count": 0})

    def check_desired(self, doc: Mapping[str, Any]) -> None:
        step = doc.get("counter", {}).get("step", 1)
        if not isinstance(step, int) or step < 1:
            raise DesiredStateError("counter.step must be a positive integer")

    def apply_desired(self, doc: Mapping[str, Any]) -> None:
        self.step = doc.get("counter", {}).get("step", 1)


TEST_ROLES = {**ROLES, "counter": RoleSpec(CounterSettings, CounterRole)}


async def test_a_role_emits_reports_health_takes_commands_and_desired_state(
    edge_config: ConfigFactory, probe: Probe, device_id: str
) -> None:
    config = edge_config(roles={"counter": {"fail_first_runs": 1}})
    async with Agent(config, roles=TEST_ROLES) as agent:
        role = agent.roles["counter"]
        assert isinstance(role, CounterRole)
        await until(
            lambda: [t for t in numbered(probe, "telemetry") if t["role"] == "counter"],
            "the role's telemetry after its restart",
        )
        assert role.runs == 2, "a failed role is restarted"

        topic, payload = make_command(
            device_id, "c-reset", "counter.reset", {}, 4_102_444_800_000
        )  # year 2100
        probe.publish(topic, payload)
        (result,) = await until(lambda: results_for(probe, "c-reset"), "the role command's result")
        assert result["status"] == "ok" and result["detail"] == {"count": 0}

        probe.publish(*make_desired(device_id, 1, {"counter": {"step": 5}}), retain=True)
        await until(lambda: numbered(probe, "state/reported"), "the report")
        assert role.step == 5

        health = await until(
            lambda: [
                h
                for h in numbered(probe, "health")
                if "counter" in h.get("roles", {}) and h["roles"]["counter"]["errors"] == 1
            ],
            "health with the role",
        )
        assert "count" in health[-1]["roles"]["counter"]
    assert role.cancelled, "the role's run is cancelled on shutdown"


async def test_a_role_refusing_desired_state_rejects_the_whole_document(
    edge_config: ConfigFactory, probe: Probe, device_id: str
) -> None:
    async with Agent(edge_config(roles={"counter": {}}), roles=TEST_ROLES) as agent:
        await until(agent.link.connected.is_set, "the agent to connect")
        probe.publish(
            *make_desired(device_id, 1, {"health_period_s": 9, "counter": {"step": 0}}), retain=True
        )
        (report,) = await until(lambda: numbered(probe, "state/reported"), "the report")
        assert agent.health_period_s == 1, "nothing of a rejected document is applied"
    assert report["status"] == "rejected" and "counter.step" in report["error"]


def test_role_settings_are_checked_before_anything_starts(edge_config: ConfigFactory) -> None:
    with pytest.raises(ConfigError, match=r"roles\.counter\.fail_first_runs"):
        Agent(edge_config(roles={"counter": {"fail_first_runs": "x"}}), roles=TEST_ROLES)
    with pytest.raises(ConfigError, match="no such role"):
        Agent(edge_config(roles={"counter": {}}))
