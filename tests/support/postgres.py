"""A fresh PostgreSQL database per test (the server on 127.0.0.1:5432, trust auth)."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """Create `fleet_test_<random>`, yield its URL, drop it afterwards."""
    name = f"fleet_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
