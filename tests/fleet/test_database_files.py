"""The SQLite files hold password and token hashes: the fleet's user alone may read them (issue 8, finding 13)."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """Files default to 0644 under it: what the attack found."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_database_and_its_wal_files_are_0600(tmp_path: Path, mosquitto: Mosquitto,
                                                       usual_umask: None) -> None:
    db = tmp_path / "var" / "fleet.sqlite3"
    async with running_fleet(fleet_settings(f"sqlite://{db}", mosquitto.url)) as http:
        assert (await http.post("/api/devices", json={"id": "mode-1", "kind": "pi"})).status_code == 201
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
        assert all(f.exists() for f in files)  # WAL mode: the companions exist while it runs
        assert {f.name: oct(_mode(f)) for f in files} == {f.name: "0o600" for f in files}


async def test_a_database_left_world_readable_is_narrowed_at_start(tmp_path: Path, mosquitto: Mosquitto,
                                                                   usual_umask: None) -> None:
    db = tmp_path / "fleet.sqlite3"
    async with running_fleet(fleet_settings(f"sqlite://{db}", mosquitto.url)):
        pass
    db.chmod(0o644)  # as an older fleet created it
    async with running_fleet(fleet_settings(f"sqlite://{db}", mosquitto.url)):
        assert oct(_mode(db)) == "0o600"
        assert oct(_mode(db.with_name(db.name + "-wal"))) == "0o600"
