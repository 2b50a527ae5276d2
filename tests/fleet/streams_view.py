"""What the fleet made of a device's streams, read from its database (issue 9 §3, §5 tests).

The fleet under test runs in the test's process (tests/support/fleet.py), so its Tortoise
connection is the process's: the tests read the rows directly, epochs included (the API does not
show them).
"""

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.models import Device, EventRecord, HealthRecord, SeqGap, TelemetryRecord
from tests.support.postgres import fresh_database
from tests.support.wait import async_wait_for


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The fleet's database: a SQLite file, or a fresh PostgreSQL database (import it into a test module)."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'fleet.sqlite3'}"
    else:
        async with fresh_database() as url:
            yield url


async def settled_stats(http: httpx.AsyncClient, *, received: int = 0) -> dict[str, Any]:
    """The ingest counters once at least `received` messages came in and every one is counted."""

    async def settled() -> dict[str, Any] | None:
        stats: dict[str, Any] = (await http.get("/api/ingest/stats")).json()
        return stats if stats["received"] >= received and stats["accounted"] == stats["received"] else None

    return await async_wait_for(settled, timeout=30, what=f"the ingest to count {received} messages")


async def stored_stamps(device_id: str) -> Counter[tuple[int, int, int]]:
    """(epoch, ses, seq) of every stored health report, telemetry message and event: how many rows each."""
    stamps: Counter[tuple[int, int, int]] = Counter()
    for model in (HealthRecord, TelemetryRecord, EventRecord):
        for epoch, ses, seq in await model.filter(device_id=device_id).values_list("epoch", "ses", "seq"):
            stamps[(epoch, ses, seq)] += 1
    return stamps


async def gaps(device_id: str) -> list[tuple[int, int, int, int, bool]]:
    """(epoch, ses, first, last, open) of the device's gaps."""
    rows = await SeqGap.filter(device_id=device_id).order_by("epoch", "ses", "first_seq")
    return [(g.epoch, g.ses, g.first_seq, g.last_seq, g.open) for g in rows]


async def device_row(device_id: str) -> Device:
    return await Device.get(id=device_id)
