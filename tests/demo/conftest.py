"""Fixtures of the demo's tests: free ports for each demo, and every demo stopped at the end."""

import os
from collections.abc import Iterator

import pytest

from tests.demo.support import Demo
from tests.support.mosquitto import free_port


@pytest.fixture
def demo_env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("FLEET_")},
            "FLEET_HTTP_PORT": str(free_port()), "FLEET_EMBEDDED_BROKER_PORT": str(free_port())}


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    started: list[Demo] = []
    yield started
    for demo in started:
        demo.stop()
