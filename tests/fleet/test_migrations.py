"""Migrations (fleet/migrations, aerich) on SQLite and PostgreSQL: a database the previous release
made (its own code, from git, run in a subprocess) with rows in it is upgraded by this one to the
same schema as an empty database migrated by this one, and as the current models describe
(`generate_schemas`: a model changed without its migration fails here); the rows stay. A database a
newer release migrated is refused; two instances migrating one PostgreSQL database at once apply
each migration once."""

import asyncio
import io
import os
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE

from fleet.db import database, tortoise_config
from fleet.migrations import DatabaseNewerError, applied, migrations
from fleet.models import Device, TelemetryRecord, User
from fleet.partitions import TELEMETRY, ensure_partitioned, month_of, month_start
from fleet.settings import Settings
from tests.support.postgres import fresh_database

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = "c2114b6"  # the last release that made its tables with generate_schemas

# run by the previous release's code: its database() makes the schema, then a device, telemetry, a user
MAKE_PREVIOUS = """
import asyncio, sys
from datetime import UTC, datetime
import fleet.db
assert fleet.db.__file__.startswith(sys.argv[2]), fleet.db.__file__  # not this checkout's fleet
assert not hasattr(fleet.db, "tortoise_config")
from fleet.db import database
from fleet.models import Device, TelemetryRecord, User
from fleet.settings import Settings

async def main() -> None:
    async with database(Settings(database_url=sys.argv[1])):
        at = datetime(2026, 11, 1, 8, tzinfo=UTC)
        await Device.create(id="pole-7", name="Pole 7", ward="Tan Phu", kind="esp32")
        await TelemetryRecord.create(device_id="pole-7", ses=1, seq=1, received_at=at, at=at, role="light",
                                     readings={"lux": 12.5})
        await User.create(username="ops1", password_hash="x", role="ops")

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's fleet and contract packages, from git (CI has a full clone)."""
    found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS}^{{commit}}"],
                           capture_output=True, check=False)
    if found.returncode != 0:
        pytest.fail(f"commit {PREVIOUS} (the release before migrations) is not in {ROOT}: the upgrade test "
                    f"needs the repository's history (a full clone, not a shallow one)")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS, "fleet", "contract"],
                             capture_output=True, check=True).stdout
    folder = tmp_path_factory.mktemp("previous_release")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def make_with_previous_release(code: Path, url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", MAKE_PREVIOUS, url, str(code)], cwd=code, env=env,
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr


@asynccontextmanager
async def databases(dialect: str, tmp_path: Path, count: int) -> AsyncIterator[list[str]]:
    if dialect == "sqlite":
        yield [f"sqlite://{tmp_path / f'db{i}.sqlite3'}" for i in range(count)]
        return
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(fresh_database()) for _ in range(count)]


async def schema(url: str) -> dict[str, Any]:
    """Tables, columns, indexes, constraints and comments, as the database itself reports them."""
    if url.startswith("sqlite://"):
        return sqlite_schema(url.removeprefix("sqlite://"))
    conn = await asyncpg.connect(url)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default,"
            " col_description(format('%I', table_name)::regclass, ordinal_position) AS comment"
            " FROM information_schema.columns WHERE table_schema = 'public'")
        indexes = await conn.fetch("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
        constraints = await conn.fetch(
            "SELECT conrelid::regclass::text AS tab, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace")
        tables = await conn.fetch(
            "SELECT c.relname, c.relkind, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')")
    finally:
        await conn.close()
    return {"tables": {tuple(r) for r in tables},
            "columns": {(r[0], r[1]): tuple(r[2:]) for r in columns},
            "indexes": {tuple(r) for r in indexes}, "constraints": {tuple(r) for r in constraints}}


def sqlite_schema(path: str) -> dict[str, Any]:
    db = sqlite3.connect(path)
    try:
        tables = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        found: dict[str, Any] = {"tables": set(tables), "columns": {}, "indexes": set(), "foreign_keys": set()}
        for table in tables:
            for _, name, kind, notnull, default, pk in db.execute(f'PRAGMA table_info("{table}")'):
                found["columns"][(table, name)] = (kind, notnull, default, pk)
            for _, index, unique, origin, _partial in db.execute(f'PRAGMA index_list("{table}")'):
                cols = tuple(col for _, _, col in db.execute(f'PRAGMA index_info("{index}")'))
                # SQLite names the indexes of UNIQUE constraints by their order in the table: by columns
                name = "(unique constraint)" if index.startswith("sqlite_autoindex_") else index
                found["indexes"].add((table, name, unique, origin, cols))
            for row in db.execute(f'PRAGMA foreign_key_list("{table}")'):
                found["foreign_keys"].add((table, *row[2:]))
        return found
    finally:
        db.close()


def differences(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Per part of a schema, what only one side has (for columns: with both sides' definitions)."""
    found: dict[str, Any] = {}
    for part in left.keys() | right.keys():
        a, b = left.get(part, set()), right.get(part, set())
        if isinstance(a, dict):
            changed = {key: (a.get(key), b.get(key)) for key in a.keys() | b.keys() if a.get(key) != b.get(key)}
            if changed:
                found[part] = changed
        elif a != b:
            found[part] = {"only left": a - b, "only right": b - a}
    return found


def _table(key: Any) -> str:
    return key if isinstance(key, str) else key[0]


def without_past_months(found: dict[str, Any], now: datetime) -> dict[str, Any]:
    """`found` less the telemetry partitions of months before `now`'s: a converted table keeps one
    for each month its rows fall in, which a database made empty today has no reason to have."""
    def past(table: str) -> bool:
        month = month_of(TELEMETRY, table)
        return month is not None and month < month_start(now)
    return {part: ({k: v for k, v in value.items() if not past(_table(k))} if isinstance(value, dict)
                   else {k for k in value if not past(_table(k))})
            for part, value in found.items()}


async def from_models(url: str) -> None:
    """What the current models describe: Tortoise's own CREATE TABLEs (and telemetry's partitions)."""
    EXECUTOR_CACHE.clear()  # SQL cached per connection name, from the other dialect's run (as fleet.db does)
    await Tortoise.init(config=tortoise_config(Settings(database_url=url)))
    try:
        await Tortoise.generate_schemas(safe=True)
        conn = Tortoise.get_connection("default")
        if conn.capabilities.dialect == "postgres":
            await ensure_partitioned(conn, datetime.now(UTC))
    finally:
        await Tortoise.close_connections()


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_previous_release_database_upgrades_to_the_models_schema(
        dialect: str, previous_release: Path, tmp_path: Path) -> None:
    async with databases(dialect, tmp_path, 3) as (previous, empty, models):
        make_with_previous_release(previous_release, previous)
        made = {t if isinstance(t, str) else t[0] for t in (await schema(previous))["tables"]}
        assert {"device", "telemetry", "app_user"} <= made and "aerich" not in made  # no migration table then
        for url in (previous, empty):
            async with database(Settings(database_url=url)):
                assert await applied(Tortoise.get_connection("default")) == migrations(dialect)
        await from_models(models)
        upgraded, migrated, described = await schema(previous), await schema(empty), await schema(models)
        if dialect == "postgres":  # the old row's month (2026-11) has its partition, however long ago it was
            assert "telemetry_p2026_11" in {_table(t) for t in upgraded["tables"]}
            upgraded = without_past_months(upgraded, datetime.now(UTC))
        assert differences(upgraded, migrated) == {}
        # else a model changed without its migration: python -m fleet.migrations NAME
        assert differences(migrated, described) == {}

        async with database(Settings(database_url=previous)):  # the rows stayed, the ORM reads them
            device = await Device.get(id="pole-7")
            assert (device.name, device.ward, device.kind) == ("Pole 7", "Tan Phu", "esp32")
            row = await TelemetryRecord.get(device_id="pole-7")
            assert (row.seq, row.role, row.readings) == (1, "light", {"lux": 12.5})
            assert (await User.get(username="ops1")).role == "ops"
            assert await applied(Tortoise.get_connection("default")) == migrations(dialect)  # nothing twice


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_database_newer_than_the_code_is_refused(dialect: str, tmp_path: Path) -> None:
    async with databases(dialect, tmp_path, 1) as (url,):
        async with database(Settings(database_url=url)):
            await Tortoise.get_connection("default").execute_query(
                "INSERT INTO aerich (version, app, content) VALUES ('999_20991231000000_future.py', 'models', '{}')")
        with pytest.raises(DatabaseNewerError) as refused:
            async with database(Settings(database_url=url)):
                pytest.fail("opened a database a newer release migrated")
        assert refused.value.unknown == ["999_20991231000000_future.py"]
        assert refused.value.latest == migrations(dialect)[-1]


@pytest.mark.postgres
async def test_instances_starting_together_migrate_once() -> None:
    async with fresh_database() as url:
        env = {**os.environ, "FLEET_DATABASE_URL": url}
        fleet = [sys.executable, "-m", "fleet.cli", "db", "upgrade"]
        starts = [await asyncio.create_subprocess_exec(*fleet, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.PIPE) for _ in range(3)]
        outputs = await asyncio.gather(*(start.communicate() for start in starts))
        assert [start.returncode for start in starts] == [0, 0, 0], outputs
        said = [out.decode() for out, _ in outputs]
        assert sum("applied" in line for line in said) == 1, said  # one migrated, the others found it done
        conn = await asyncpg.connect(url)
        try:
            rows = [r["version"] for r in await conn.fetch("SELECT version FROM aerich ORDER BY id")]
        finally:
            await conn.close()
        assert rows == migrations("postgres")
