"""Starting agents from other tools: the one-command demo, load tests, a bench of simulated Pis.

Two ways, both with one state folder per agent (never shared: the folder is locked):
- in this process: `await run_agents([sim_config(...), ...], stop)`;
- as processes: `write_config(sensor_config(...), path)`, then run `agent_argv(path)`.

The builders return a validated `AgentConfig`: the agent's own keys by `parse_config`, and each
role's table by that role's settings (which imports the role's module, so a missing extra is a
`ConfigError` naming it, here rather than in the agent's log). `options` is the rest of a role's
table (docs/edge-roles.md, docs/edge-camera.md); `overrides` are top-level keys.
"""

import asyncio
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge.agent import run_agent
from edge.config import AgentConfig, parse_config
from edge.errors import ConfigError
from edge.roles import ROLES


def agent_config(
    device_id: str,
    broker_url: str,
    state_dir: Path,
    roles: Mapping[str, Mapping[str, Any]],
    *,
    health_period_s: int = 30,
    **overrides: Any,
) -> AgentConfig:
    """A validated config with these `[roles.<name>]` tables, each checked by its role."""
    for name, table in roles.items():
        if name not in ROLES:
            raise ConfigError(f"roles.{name}: no such role (known: {', '.join(ROLES)})")
        ROLES[name].check(name, table)
    data: dict[str, Any] = {
        "device_id": device_id,
        "state_dir": str(state_dir),
        "health_period_s": health_period_s,
        "broker": {"url": broker_url},
        "roles": {name: dict(table) for name, table in roles.items()},
        **overrides,
    }
    return parse_config(data)


def sim_config(
    device_id: str,
    broker_url: str,
    state_dir: Path,
    *,
    health_period_s: int = 30,
    sim_period_s: float = 5.0,
    **overrides: Any,
) -> AgentConfig:
    """An agent with the `sim` role (made-up readings every `sim_period_s`)."""
    return agent_config(device_id, broker_url, state_dir, {"sim": {"period_s": sim_period_s}},
                        health_period_s=health_period_s, **overrides)


def sensor_config(
    device_id: str,
    broker_url: str,
    state_dir: Path,
    *,
    port: str,
    options: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> AgentConfig:
    """An environmental sensor node: an SDS011 (or, with `source = "modbus"`, a Modbus RTU
    device) on the serial `port`."""
    return agent_config(device_id, broker_url, state_dir, {"sensor": {"port": port, **(options or {})}},
                        **overrides)


def camera_config(
    device_id: str,
    broker_url: str,
    state_dir: Path,
    *,
    cameras: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> AgentConfig:
    """An intersection Pi watching `cameras` (each `{"id", "url", ...}`: an RTSP URL or a file)."""
    table = {"cameras": [dict(camera) for camera in cameras], **(options or {})}
    return agent_config(device_id, broker_url, state_dir, {"camera": table}, **overrides)


def hotspot_config(
    device_id: str,
    broker_url: str,
    state_dir: Path,
    *,
    log_path: Path | None = None,
    ctrl_path: str | None = None,
    options: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> AgentConfig:
    """A wifi hotspot's counter: hostapd's control socket `ctrl_path`, or the log file `log_path`
    (exactly one of them)."""
    if (log_path is None) == (ctrl_path is None):
        raise ConfigError("roles.hotspot: give log_path or ctrl_path (one of them)")
    source: dict[str, Any] = ({"source": "log", "log_path": str(log_path)} if log_path is not None
                              else {"source": "hostapd", "ctrl_path": ctrl_path})
    return agent_config(device_id, broker_url, state_dir, {"hotspot": {**source, **(options or {})}}, **overrides)


def speaker_config(
    device_id: str,
    broker_url: str,
    state_dir: Path,
    *,
    player: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> AgentConfig:
    """A loudspeaker Pi; `player` is the argv template of the program that plays a clip
    (`{file}`, `{volume}`; the role's default: `aplay -q {file}`)."""
    table = {**({"player": list(player)} if player is not None else {}), **(options or {})}
    return agent_config(device_id, broker_url, state_dir, {"speaker": table}, **overrides)


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
