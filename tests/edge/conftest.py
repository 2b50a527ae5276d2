"""Fixtures for the edge agent's tests: a config against the private broker, observers."""

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from edge.config import AgentConfig, parse_config
from tests.edge.helpers import ConfigFactory
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe

if TYPE_CHECKING:
    from tests.edge.ota_support import Kit


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    # a table is merged into the default's, except an empty one, which replaces it (roles={}: none)
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and value and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def edge_config(tmp_path: Path, mosquitto: Mosquitto, device_id: str) -> ConfigFactory:
    """make(**overrides) -> a config for `device_id` on the private broker, quick to reconnect."""

    def make(**overrides: Any) -> AgentConfig:
        data = {
            "device_id": device_id,
            "state_dir": str(tmp_path / "state"),
            "health_period_s": 1,
            "shutdown_drain_s": 5,
            "broker": {"url": mosquitto.url, "backoff_min_s": 0.05, "backoff_max_s": 0.5, "timeout_s": 5},
            "roles": {"sim": {"period_s": 0.5, "seed": 7}},
        }
        return parse_config(_merge(data, overrides))

    return make


@pytest.fixture
def probe(mosquitto: Mosquitto, device_id: str) -> Iterator[Probe]:
    """Everything in the device's subtree, from now on (plus retained messages)."""
    observer = Probe(mosquitto.port, f"ioc/v1/d/{device_id}/#")
    yield observer
    observer.close()


@pytest.fixture(scope="session")
def ota_kit(tmp_path_factory: pytest.TempPathFactory) -> "Kit":
    """Signed releases of the agent at four versions (tests/edge/ota_support.py), built once."""
    from tests.edge.ota_support import build_kit  # only the OTA tests pay for it

    return build_kit(tmp_path_factory.mktemp("ota-kit"))
