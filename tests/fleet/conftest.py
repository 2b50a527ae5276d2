"""The fleet under test: real service, private Mosquitto, SQLite file or fresh PostgreSQL database."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fleet.release_kit import ota_fleet, signer, stranger  # noqa: F401  (fixtures: a fleet with release keys)
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'fleet.sqlite3'}"
    else:
        async with fresh_database() as url:
            yield url


@pytest.fixture
async def fleet(database_url: str, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with running_fleet(fleet_settings(database_url, mosquitto.url)) as http:
        yield http


@pytest.fixture
def keeping_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto sized as docs/fleet.md "Sizing the broker" says: no limit on a session's queue."""
    broker = Mosquitto(tmp_path / "keeping-mosquitto", max_queued_messages=0)
    broker.start()
    yield broker
    broker.kill()
