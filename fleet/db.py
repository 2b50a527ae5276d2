"""The database's lifecycle: Tortoise ORM on SQLite (default) or PostgreSQL."""

import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.context import TortoiseContext

from fleet import migrations
from fleet.settings import Settings

log = logging.getLogger(__name__)

MODELS = ["fleet.models", "fleet.ota.models", "fleet.ota.rollout_models", "fleet.broadcast.models",
          "fleet.broadcast.cap_models", "fleet.ops.models",
          "fleet.relay.models", "fleet.children.models", "fleet.assets.models"]


def _url(settings: Settings) -> str:
    url = settings.database_url
    if url.startswith("postgresql://"):
        url = "postgres://" + url.removeprefix("postgresql://")
    return url


def tortoise_config(settings: Settings) -> dict[str, Any]:
    """Tortoise's configuration: every fleet model, and aerich's table of applied migrations, in one app."""
    return {"connections": {"default": _url(settings)},
            "apps": {migrations.APP: {"models": [*MODELS, "aerich.models"], "default_connection": "default"}}}


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
async def database(settings: Settings, *, migrate: bool = True) -> AsyncIterator[TortoiseContext]:
    """Open the database, bring its schema up to this release's (`upgrade_schema`), close it on exit.
    `migrate=False` changes nothing (`fleet db status`, and `fleet db upgrade`, which reports).

    The context is also the process-wide fallback, so request handlers (which run in other
    tasks than the lifespan) find it.
    """
    # Tortoise caches generated SQL per connection *name*; a process that opens SQLite and then
    # PostgreSQL under the same name (the test suite does) must not reuse the other's SQL.
    EXECUTOR_CACHE.clear()
    path = settings.sqlite_path()
    if path is not None and str(path) != ":memory:":
        make_private(path)
    config = tortoise_config(settings)
    ctx = await Tortoise.init(config=config, _enable_global_fallback=True)
    try:
        if migrate:
            await upgrade_schema(settings)
        yield ctx
    finally:
        await ctx.close_connections()


async def upgrade_schema(settings: Settings) -> list[str]:
    """Apply the pending migrations (fleet/migrations; `DatabaseNewerError` when a newer release
    migrated the database), then the DDL kept outside them; the migrations applied."""
    applied = await migrations.upgrade(Tortoise.get_connection("default"), tortoise_config(settings))
    if applied:
        log.info("database schema: applied %s", ", ".join(applied))
    # telemetry partitioned by month on PostgreSQL (fleet/partitions.py), after the schema exists
    await _partition_telemetry()
    return applied


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
