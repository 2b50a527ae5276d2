"""What the broadcasts learn from the ingest, inside the batch's transaction (fleet/ingest/store.py
calls `observe_batch` after the batch's rows are written, as it calls the OTA progress).

`batch`: the births and the stored (not duplicate, not refused) messages, in arrival order. Each
part below keeps to its own rows and must not raise for one bad message: a message that does not
fit is logged and passed over, so the ingest never loses a batch to a receipt.
"""

from collections.abc import Sequence
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from contract import Upstream
from fleet.broadcast import clocks, delivery, emergency, receipts


async def observe_batch(conn: BaseDBAsyncClient, batch: Sequence[Upstream], now: datetime) -> None:
    if not batch:
        return
    await receipts.observe(conn, batch, now, await clocks.observe(conn, batch, now))
    await delivery.observe(conn, batch, now)  # speakers' births and applied documents (delivery.py)
    await emergency.observe(conn, batch, now)  # clip_fetch answers (clips.py), emergency commands' answers
