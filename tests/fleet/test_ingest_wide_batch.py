"""A batch that touches many streams at once (a rollout's reports from thousands of devices, or any
busy fleet): it is stored in one transaction, on SQLite and PostgreSQL. Before, the streams were
loaded with one OR per stream in one query, and ~500 streams were too deep for the query builder
(RecursionError): every such batch fell back to storing its messages one by one."""

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contract import parse_upstream
from fleet.db import database
from fleet.ingest.store import apply_batch
from fleet.models import HealthRecord, SeqStream
from fleet.settings import Settings

WIDE = 500  # the ingest's default largest batch, one stream each


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[None]:
    async with database(Settings(database_url=database_url)):
        yield


async def test_a_batch_of_500_streams_is_stored_in_one_go(db: None) -> None:
    batch = [parse_upstream(f"ioc/v1/d/wide-{n:04d}/health",
                            json.dumps({"v": 1, "ses": 7, "seq": 0, "ts": None, "up_s": 1, "fw": "0.1.0"}).encode())
             for n in range(WIDE)]
    result = await apply_batch(batch)
    assert result.stored == WIDE and result.refused == []
    again = await apply_batch(batch)  # every stream now loaded from the database: all duplicates
    assert again.duplicates == WIDE and again.stored == 0
    assert await HealthRecord.all().count() == WIDE and await SeqStream.all().count() == WIDE
