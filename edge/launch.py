"""Starting agents from other tools: the one-command demo, load tests, a bench of simulated Pis.

Two ways, both with one state folder per agent (never shared: the folder is locked):
- in this process: `await run_agents([sim_config(...), ...], stop)`;
- as processes: `write_config(sim_config(...), path)`, then run `agent_argv(path)`.
"""

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.agent import run_agent
from edge.config import AgentConfig, parse_config


def sim_config(
    device_id: str,
    broker_url: str,
    state_dir: Path,
    *,
    health_period_s: int = 30,
    sim_period_s: float = 5.0,
    **overrides: Any,
) -> AgentConfig:
    """A validated config for an agent with the `sim` role; `overrides` are top-level keys."""
    data: dict[str, Any] = {
        "device_id": device_id,
        "state_dir": str(state_dir),
        "health_period_s": health_period_s,
        "broker": {"url": broker_url},
        "roles": {"sim": {"period_s": sim_period_s}},
        **overrides,
    }
    return parse_config(data)


def agent_argv(config_path: Path, *, log_level: str = "info") -> list[str]:
    """The command line of an agent process (`edge-agent`, with this interpreter)."""
    return [sys.executable, "-m", "edge", "--config", str(config_path), "--log-level", log_level]


async def run_agents(configs: Sequence[AgentConfig], stop: asyncio.Event) -> list[int]:
    """Run several agents in this event loop until `stop` is set; their exit codes."""
    async with asyncio.TaskGroup() as tasks:
        running = [
            tasks.create_task(run_agent(config, stop=stop), name=f"edge-agent-{config.device_id}")
            for config in configs
        ]
    return [task.result() for task in running]
