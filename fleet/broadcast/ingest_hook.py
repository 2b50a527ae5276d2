"""What the broadcasts learn from the ingest (docs/broadcasts.md, "What the ingest tells the broadcasts").

fleet/ingest/store.py calls `observe_batch` after the batch's transaction has committed, with the
births and the stored (not duplicate, not refused) messages in arrival order. It runs in a
transaction of its own, so:
- the ingest never loses, delays or retries a batch because of a receipt: a failure here (a bug, a
  database error, a deadlock lost three times) is logged and counted in `FAILURES`, and the
  messages stay stored (their events are in the event table: a receipt is the only thing missed);
- no lock is held on the ingest's device rows while broadcast rows are waited for. The broadcast
  rows are taken in the delivery's order (speaker delivery, then receipts, then clips and emergency
  dispatches), so the hook and the delivery do not deadlock each other.

Each part keeps to its own rows and must not raise for one bad message.
"""

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from tortoise.transactions import in_transaction

from contract import Upstream
from fleet.broadcast import clocks, delivery, emergency, receipts

log = logging.getLogger(__name__)

TRIES = 3  # a transaction PostgreSQL chose as a deadlock's victim is run again, this many times in all
FAILURES = {"batches": 0}  # batches whose broadcast bookkeeping failed (the messages are stored)


async def _observe(batch: Sequence[Upstream], now: datetime) -> None:
    async with in_transaction() as conn:
        offsets = await clocks.observe(conn, batch, now)
        await delivery.observe(conn, batch, now)  # speakers' births and applied documents (delivery.py)
        await receipts.observe(conn, batch, now, offsets)
        await emergency.observe(conn, batch, now)  # clip_fetch answers (clips.py), emergency commands' answers


async def observe_batch(batch: Sequence[Upstream], now: datetime) -> None:
    if not batch:
        return
    failure: Exception | None = None
    for attempt in range(1, TRIES + 1):
        try:
            await _observe(batch, now)
            return
        except asyncio.CancelledError:
            raise
        except Exception as err:  # asyncpg's DeadlockDetectedError comes wrapped by Tortoise: by its text
            failure = err
            if attempt < TRIES and "deadlock" in str(err).lower():
                await asyncio.sleep(0.05 * attempt)
                continue
            break
    FAILURES["batches"] += 1
    log.error("broadcasts: a batch of %d messages was stored but not applied to receipts and clocks (%s: %.200s)",
              len(batch), type(failure).__name__, failure)
