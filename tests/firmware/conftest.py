"""Fixtures for the firmware tests: host boards on a private broker, and the fleet's view of them."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.firmware.support import HostBoard
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe


@pytest.fixture
def boards(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Callable[..., HostBoard]]:
    """make(device_id, **config) -> a prepared (not started) board on the test's broker.

    `port` (default: the broker's plain listener) and `ca_der` (the board then speaks TLS) pass
    through to HostBoard."""
    made: list[HostBoard] = []

    def make(device_id: str, port: int | None = None, **cfg: object) -> HostBoard:
        board = HostBoard(tmp_path / device_id, device_id, port or mosquitto.port, **cfg)
        made.append(board)
        return board

    yield make
    for board in made:
        board.kill()


@pytest.fixture
def probe(mosquitto: Mosquitto, device_id: str) -> Iterator[Probe]:
    """Everything in the device's subtree, as the fleet would see it."""
    observer = Probe(mosquitto.port, f"ioc/v1/d/{device_id}/#")
    yield observer
    observer.close()
