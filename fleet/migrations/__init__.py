"""The database schema, from migrations made with aerich (docs/fleet.md, "Database schema and migrations").

aerich writes a migration as the SQL of one dialect, so there are two series with the same names:
`sqlite/models/` and `postgres/models/` (aerich's folder per app). The first of each (`0_…_init`) is
the schema the release before migrations made with `generate_schemas` (the models at commit c2114b6),
as `CREATE … IF NOT EXISTS`: on a database that release made it creates only aerich's own table and
is recorded as applied; on an empty database it creates everything.

`upgrade()` applies what is pending, one transaction per migration (aerich's `Command.upgrade`):
- on PostgreSQL under a session advisory lock, so instances starting together migrate one at a
  time; the later ones find nothing pending;
- a database that records a migration this code does not have (a newer release migrated it) is
  refused with `DatabaseNewerError` before anything is changed.
New migrations: `python -m fleet.migrations NAME` (fleet/migrations/__main__.py).
"""

import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aerich import Command
from aerich.migrate import Migrate
from tortoise import BaseDBAsyncClient
from tortoise.exceptions import OperationalError

HERE = Path(__file__).parent
APP = "models"  # the Tortoise app of every fleet model; aerich keeps one series per app
DIALECTS = ("sqlite", "postgres")
LOCK_KEY = 0x666C_6D69_6772  # pg_advisory_lock: one migrating instance at a time ("flmigr")


class MigrationError(Exception):
    """The database's schema cannot be brought to this release's."""


class DatabaseNewerError(MigrationError):
    """The database was migrated by a newer release than this one."""

    def __init__(self, unknown: list[str], latest: str) -> None:
        self.unknown = unknown
        self.latest = latest
        super().__init__(f"the database has migrations this release does not know ({', '.join(unknown)}; "
                         f"this release ends at {latest}): run the newer release, or restore a backup")


@dataclass(frozen=True)
class Status:
    """Where a database stands: `applied` (None: no migration table yet), `pending`, `unknown`."""

    applied: list[str] | None
    pending: list[str]
    unknown: list[str]


def location(dialect: str) -> Path:
    """aerich's `location` for a dialect (it keeps the files in `<location>/<app>/`)."""
    if dialect not in DIALECTS:
        raise MigrationError(f"no migrations for the {dialect} dialect")
    return HERE / dialect


def migrations(dialect: str) -> list[str]:
    """This release's migrations for a dialect, in order, as aerich names them (`N_…_name.py`)."""
    folder = location(dialect) / APP
    names = [m.name for m in pkgutil.iter_modules([str(folder)]) if m.name.split("_", 1)[0].isdigit()]
    return [f"{name}.py" for name in sorted(names, key=lambda name: int(name.split("_", 1)[0]))]


async def applied(conn: BaseDBAsyncClient) -> list[str] | None:
    """The migrations recorded in the database (aerich's table), oldest first; None without the table."""
    try:
        _, rows = await conn.execute_query("SELECT version FROM aerich WHERE app = 'models' ORDER BY id")
    except OperationalError:
        return None
    return [str(row["version"]) for row in rows]


async def status(conn: BaseDBAsyncClient) -> Status:
    known = migrations(conn.capabilities.dialect)
    done = await applied(conn)
    recorded = set(done or [])
    return Status(applied=done, pending=[name for name in known if name not in recorded],
                  unknown=[name for name in (done or []) if name not in known])


@asynccontextmanager
async def _one_migrator(conn: BaseDBAsyncClient) -> AsyncIterator[None]:
    """On PostgreSQL, hold the migration lock on a pool connection of its own (the migrations run
    on others; the pool has 5 by default). SQLite serves one instance: nothing to share."""
    if conn.capabilities.dialect != "postgres":
        yield
        return
    async with conn.acquire_connection() as locked:
        await locked.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            yield
        finally:
            await locked.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def upgrade(conn: BaseDBAsyncClient, tortoise_config: dict[str, Any]) -> list[str]:
    """Apply the pending migrations; the names applied. `tortoise_config` is the one Tortoise was
    initialised with (aerich finds the app's connection in it)."""
    dialect = conn.capabilities.dialect
    async with _one_migrator(conn):
        now = await status(conn)
        if now.unknown:
            raise DatabaseNewerError(now.unknown, migrations(dialect)[-1])
        if not now.pending:
            return []
        command = Command(tortoise_config, app=APP, location=str(location(dialect)))
        # Command.upgrade reads the files from here; aerich's Migrate.init (which sets it) would also
        # load the last migration's model state, which only `aerich migrate` needs
        Migrate.migrate_location = location(dialect) / APP
        return await command.upgrade(run_in_transaction=True)
