"""The database's lifecycle: Tortoise ORM on SQLite (default) or PostgreSQL."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.context import TortoiseContext

from fleet.settings import Settings

MODELS = ["fleet.models"]


def _url(settings: Settings) -> str:
    url = settings.database_url
    if url.startswith("postgresql://"):
        url = "postgres://" + url.removeprefix("postgresql://")
    return url


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
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    ctx = await Tortoise.init(db_url=_url(settings), modules={"models": MODELS},
                              _enable_global_fallback=True)
    try:
        await Tortoise.generate_schemas(safe=True)
        yield ctx
    finally:
        await ctx.close_connections()


async def ping() -> bool:
    """Whether the database answers (used to tell a dead database from a bad message)."""
    try:
        conn = Tortoise.get_connection("default")
        await conn.execute_query("SELECT 1")
    except Exception:
        return False
    return True
