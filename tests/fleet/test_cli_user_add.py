"""`fleet user-add` says which database it wrote to (issue 10, part 3): the SQLite file's absolute
path, or the server's URL without its password; a database it had to create is called new."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import fresh_database

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def user_add(database_url: str, username: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "FLEET_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fleet.cli", "user-add", username, "--role", "ops",
                           "--password-stdin"], input=PASSWORD + "\n", env=env, cwd=cwd, text=True,
                          capture_output=True, timeout=60)


def test_sqlite_names_the_file_and_a_new_one(tmp_path: Path) -> None:
    first = user_add("sqlite://var/fleet.sqlite3", "bob", tmp_path)  # relative, as the default is
    assert first.returncode == 0, first.stderr
    path = tmp_path / "var" / "fleet.sqlite3"
    assert first.stdout.strip() == (f"fleet: user bob (ops) added to sqlite://{path} (a new, empty database: "
                                    "set FLEET_DATABASE_URL for another one)")
    second = user_add("sqlite://var/fleet.sqlite3", "carol", tmp_path)
    assert second.stdout.strip() == f"fleet: user carol (ops) added to sqlite://{path}"


@pytest.mark.postgres
async def test_postgres_names_the_server_without_the_password(tmp_path: Path) -> None:
    async with fresh_database() as url:  # trust auth: any password is accepted, none may be shown
        with_password = url.replace("postgres://postgres@", "postgres://postgres:s3cret-pw@")
        result = user_add(with_password, "bob", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"fleet: user bob (ops) added to {url}"
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_a_failure_names_the_database_without_the_password(tmp_path: Path) -> None:
    result = user_add("postgres://postgres:s3cret-pw@127.0.0.1:1/nowhere", "bob", tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("fleet: could not add bob to postgres://postgres@127.0.0.1:1/nowhere: ")
    assert "s3cret-pw" not in result.stdout + result.stderr
