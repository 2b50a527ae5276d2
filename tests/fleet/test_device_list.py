"""`GET /api/devices` pages, filters and counts in SQL (issue 10 §4), on SQLite and PostgreSQL: every
page and filter against the same question answered in Python over all rows, and the statements one
listing runs counted from Tortoise's own log, for a small and a large fleet."""

import asyncio
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from fleet.models import Device, DeviceStatus, SeqGap

TAGS = ["pilot", "light", "x_pilot", "pilot2", "pi-lot", "a.b:c"]  # near misses of each other, and LIKE's `_`
WARDS = ["tan-phu", "tan-xuan", "tien-thanh"]
LOGIN_TABLES = ('FROM "api_token"', 'FROM "app_user"', 'UPDATE "api_token"')


async def _make_fleet(prefix: str, count: int, rng: random.Random) -> list[Device]:
    now = datetime.now(UTC)
    devices = [
        Device(id=f"{prefix}-{n:04d}", kind=rng.choice(["pi", "esp32"]), ward=rng.choice(WARDS),
               tags=rng.sample(TAGS, rng.randrange(0, 4)),
               status=rng.choice([DeviceStatus.REGISTERED, DeviceStatus.ACTIVE, DeviceStatus.DECOMMISSIONED]),
               online=rng.random() < 0.5)
        for n in range(count)
    ]
    await Device.bulk_create(devices)
    gaps = [SeqGap(device_id=d.id, epoch=0, ses=1, first_seq=10 * g, last_seq=10 * g + 3, detected_at=now,
                   open=rng.random() < 0.7)
            for d in devices for g in range(rng.choice([0, 0, 1, 3]))]
    if gaps:
        await SeqGap.bulk_create(gaps)
    return devices


def _open_gaps(gaps: list[SeqGap]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for gap in gaps:
        if gap.open:
            counts[gap.device_id] = counts.get(gap.device_id, 0) + 1
    return counts


async def test_every_page_and_filter_matches_the_whole_table(fleet: httpx.AsyncClient) -> None:
    rng = random.Random(10)
    await _make_fleet("list", 230, rng)
    rows = sorted(await Device.filter(id__startswith="list-"), key=lambda d: d.id)
    gaps = _open_gaps(await SeqGap.filter(device_id__startswith="list-"))
    filters: list[tuple[dict[str, Any], Any]] = [
        ({}, lambda d: True),
        ({"ward": "tan-phu"}, lambda d: d.ward == "tan-phu"),
        ({"kind": "esp32", "status": "active"}, lambda d: d.kind == "esp32" and d.status == "active"),
        ({"online": "true"}, lambda d: d.online),
        *[({"tag": tag}, lambda d, tag=tag: tag in d.tags) for tag in [*TAGS, "pil", "nobody"]],
        ({"tag": "pilot", "ward": "tan-xuan", "online": "false"},
         lambda d: "pilot" in d.tags and d.ward == "tan-xuan" and not d.online),
        ({"state": "decommissioned"}, lambda d: d.status == "decommissioned"),
        ({"state": "never_seen", "tag": "light"}, lambda d: d.status != "decommissioned" and "light" in d.tags),
    ]
    for params, keep in filters:
        expected = [d.id for d in rows if keep(d)]
        for limit, offset in [(1000, 0), (7, 0), (7, 14), (50, 200), (3, len(expected)), (5, len(expected) + 5),
                              (len(expected) or 1, 0)]:
            response = await fleet.get("/api/devices", params={**params, "limit": limit, "offset": offset})
            assert response.status_code == 200, response.text
            page = [d for d in response.json() if d["id"].startswith("list-")]
            assert [d["id"] for d in page] == expected[offset : offset + limit], (params, limit, offset)
            assert int(response.headers["X-Total-Count"]) == len(expected), (params, limit, offset)
            assert all(d["open_gaps"] == gaps.get(d["id"], 0) for d in page)
            assert all(d["state"] for d in page)


class _Statements(logging.Handler):
    """The SQL statements Tortoise runs (its `tortoise.db_client` debug log), by the task that ran them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_task: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return
        name = task.get_name() if task is not None else "-"
        self.by_task.setdefault(name, []).append(record.getMessage())


@contextmanager
def _statements() -> Iterator[_Statements]:
    logger = logging.getLogger("tortoise.db_client")
    handler = _Statements()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _statements_of_listing(fleet: httpx.AsyncClient, params: dict[str, Any], marker: str) -> list[str]:
    """The statements of the request whose statements mention `marker` (a ward only it asks for):
    the fleet's own tasks (ingest, presence sweep) run statements at the same time."""
    with _statements() as seen:
        response = await fleet.get("/api/devices", params={**params, "ward": marker})
        assert response.status_code == 200
    mine = [statements for statements in seen.by_task.values() if any(marker in s for s in statements)]
    assert len(mine) == 1, seen.by_task
    # the log-in's lookups (token, user, its last use) are the same for every request
    return [s for s in mine[0] if not any(table in s for table in LOGIN_TABLES)]


async def test_a_listing_runs_the_same_few_statements_for_ten_devices_or_five_hundred(
        fleet: httpx.AsyncClient) -> None:
    rng = random.Random(11)
    figures = {}
    for count in (10, 500):
        ward = f"count-{count}"
        devices = await _make_fleet(f"n{count}", count, rng)
        await Device.filter(id__in=[d.id for d in devices]).update(ward=ward)
        # a full page of 200 (count needed), a short last page, and a filter on a tag
        full = await _statements_of_listing(fleet, {"limit": 200}, ward)
        short = await _statements_of_listing(fleet, {"limit": 200, "offset": max(count - 3, 0)}, ward)
        tagged = await _statements_of_listing(fleet, {"limit": 200, "tag": "pilot"}, ward)
        figures[count] = (len(full), len(short), len(tagged))
    print(f"statements per GET /api/devices besides the log-in's (a page of 200, the last page, tag=pilot): "
          f"{figures}")
    # the page and the open gaps of its devices; the count too when the page is full (a short page
    # that has rows tells the total itself: 10 devices, the last 3, the ~25% tagged)
    assert figures == {10: (2, 2, 2), 500: (3, 2, 2)}
