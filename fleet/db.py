"""The database's lifecycle: Tortoise ORM on SQLite (default) or PostgreSQL."""

import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.context import TortoiseContext

from fleet.settings import Settings

MODELS = ["fleet.models", "fleet.ota.models", "fleet.ota.rollout_models", "fleet.broadcast.models",
          "fleet.broadcast.cap_models", "fleet.ops.models",
          "fleet.relay.models", "fleet.children.models", "fleet.assets.models"]


def _url(settings: Settings) -> str:
    url = settings.database_url
    if url.startswith("postgresql://"):
        url = "postgres://" + url.removeprefix("postgresql://")
    return url


def make_private(path: Path) -> None:
    """The SQLite file (and its -wal, -shm, -journal companions) readable by the fleet's user only.

    It holds password hashes, token hashes and the audit log. The file is created 0600 before
    SQLite opens it; SQLite gives its companions the database file's mode; files left 0644 by an
    older version are narrowed on every start.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
        if file.exists() and stat.S_IMODE(file.stat().st_mode) != 0o600:
            file.chmod(0o600)


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[TortoiseContext]:
    """Open the database, create missing tables, close it on exit.

    The context is also the process-wide fallback, so request handlers (which run in other
    tasks than the lifespan) find it.
    """
    # Tortoise caches generated SQL per connection *name*; a process that opens SQLite and then
    # PostgreSQL under the same name (the test suite does) must not reuse the other's SQL.
    EXECUTOR_CACHE.clear()
    path = settings.sqlite_path()
    if path is not None and str(path) != ":memory:":
        make_private(path)
    ctx = await Tortoise.init(db_url=_url(settings), modules={"models": MODELS},
                              _enable_global_fallback=True)
    try:
        await Tortoise.generate_schemas(safe=True)
        # telemetry partitioned by month on PostgreSQL (fleet/partitions.py), after the schema exists
        await _partition_telemetry()
        yield ctx
    finally:
        await ctx.close_connections()


async def _partition_telemetry() -> None:
    conn = Tortoise.get_connection("default")
    if conn.capabilities.dialect == "postgres":
        from datetime import UTC, datetime

        from fleet.partitions import ensure_partitioned
        await ensure_partitioned(conn, datetime.now(UTC))


async def ping() -> bool:
    """Whether the database answers (used to tell a dead database from a bad message)."""
    try:
        conn = Tortoise.get_connection("default")
        await conn.execute_query("SELECT 1")
    except Exception:
        return False
    return True
