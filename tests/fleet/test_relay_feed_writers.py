"""The live feed with several writers on PostgreSQL (docs/relay.md, "Live feed"): two connections
insert events, the one holding the lower id commits after the other has been read. The feed
delivers both, in id order; a hole that never fills (a rolled-back insert, a duplicate dropped by
ON CONFLICT DO NOTHING) is skipped after FLEET_FEED_HOLE_WAIT_S and does not stop the feed."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from fleet.db import database
from fleet.models import Device
from fleet.relay.feed import FeedClient, FeedHub
from fleet.relay.routing import Rule
from fleet.settings import Settings
from tests.support.postgres import fresh_database
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.postgres

READ_BOUND_S = 20  # a client that has not got what the test waits for by then has failed
INSERT = """INSERT INTO event (device_id, epoch, ses, seq, device_ts, received_at, at, event_id, type, phase,
                               category, data, snapshot)
            VALUES ('feed-cam', 0, 1, $1, NULL, $2, $2, $3, 'motion', 'start', 'security', '{}', NULL)
            ON CONFLICT DO NOTHING RETURNING id"""


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


async def insert(conn: asyncpg.Connection, seq: int) -> int | None:
    """Insert event `seq` on `conn` (in its open transaction, if any): its id, None for a duplicate."""
    row_id = await conn.fetchval(INSERT, seq, datetime.now(UTC), f"ev-{seq}")
    return int(row_id) if row_id is not None else None


async def received(client: FeedClient, count: int) -> list[int]:
    """The ids of the next `count` events offered to `client`."""
    ids: list[int] = []
    async with asyncio.timeout(READ_BOUND_S):
        while len(ids) < count:
            items = await client.next()
            assert items is not None
            ids += [item.id for item in items]
    return ids


async def test_a_lower_id_committed_later_is_delivered_in_order(url: str) -> None:
    settings = Settings(database_url=url, feed_poll_s=0.05, feed_hole_wait_s=60)
    async with database(settings):
        await Device.create(id="feed-cam")
        hub = FeedHub(settings)
        client = hub.client(Rule(endpoint_id=0), with_url=False)
        assert hub.admit()
        start = await hub.join(client)
        slow, fast = await connect(url), await connect(url)
        try:
            late = slow.transaction()
            await late.start()
            low = await insert(slow, 1)
            high = await insert(fast, 2)  # committed at once (autocommit)
            assert low is not None and high is not None and start < low < high
            # the poller has read the higher row: it moved past it (the old rule) or waits for the lower
            await async_wait_for(lambda: _true(hub.cursor >= high or hub.waiting == low),
                                 timeout=READ_BOUND_S, what="the poller to read the committed row")
            await late.commit()
            assert await received(client, 2) == [low, high]
            # and the feed goes on after them
            after = await insert(fast, 3)
            assert await received(client, 1) == [after]
        finally:
            await slow.close()
            await fast.close()
            await hub.close()


async def test_holes_that_never_fill_are_skipped_after_the_wait(url: str) -> None:
    settings = Settings(database_url=url, feed_poll_s=0.05, feed_hole_wait_s=0.5)
    async with database(settings):
        await Device.create(id="feed-cam")
        hub = FeedHub(settings)
        client = hub.client(Rule(endpoint_id=0), with_url=False)
        assert hub.admit()
        await hub.join(client)
        first, other = await connect(url), await connect(url)
        try:
            one = await insert(first, 1)
            assert await received(client, 1) == [one]
            # a rolled-back insert: its id never appears
            gone = other.transaction()
            await gone.start()
            lost = await insert(other, 2)
            await gone.rollback()
            # a duplicate: ON CONFLICT DO NOTHING takes an id from the sequence and stores nothing
            assert await insert(first, 1) is None
            two = await insert(first, 3)
            assert lost is not None and two is not None and two > lost + 1
            assert await received(client, 1) == [two]
            assert hub.cursor == two and hub.waiting is None
            three = await insert(first, 4)
            assert await received(client, 1) == [three]
        finally:
            await first.close()
            await other.close()
            await hub.close()


async def _true(value: bool) -> bool:
    return value
