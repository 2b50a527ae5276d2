"""Small helpers for the edge agent's tests."""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import AgentConfig
from tests.support.mqtt_probe import Probe
from tests.support.wait import async_wait_for

# The `edge_config` fixture: make(**overrides) -> a config on the private broker.
ConfigFactory = Callable[..., AgentConfig]


async def until(condition: Callable[[], Any], what: str, within: float = 15.0) -> Any:
    """Wait, without blocking the event loop the agent runs in, until `condition()` is truthy."""

    async def check() -> Any:
        return condition()

    return await async_wait_for(check, timeout=within, what=what)


def numbered(probe: Probe, suffix: str) -> list[dict[str, Any]]:
    """Payloads on `suffix` that carry a (ses, seq) stamp."""
    return [p for p in probe.payloads(suffix) if "seq" in p]


def results_for(probe: Probe, command_id: str) -> list[dict[str, Any]]:
    return [p for p in probe.payloads("cmd/result") if p.get("id") == command_id]


def agent_command(config_path: Path, *extra: str) -> list[str]:
    """The real CLI, run with this interpreter (`python -m edge` is `edge-agent`)."""
    return [sys.executable, "-m", "edge", "--config", str(config_path), *extra]
