"""Receipts: per speaker and occurrence, what happened (docs/broadcasts.md, "Receipts").

A receipt only moves forward (RECEIPT_RANK): a late `delivered` never undoes a `started`, and a
final state (completed, failed, missed, not delivered, skipped) is never changed.
"""

from collections.abc import Iterable
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from fleet.broadcast.models import RECEIPT_RANK, BroadcastReceipt, ReceiptState


def earlier_than(state: ReceiptState) -> list[ReceiptState]:
    """The states a receipt may move to `state` from."""
    return [s for s, rank in RECEIPT_RANK.items() if rank < RECEIPT_RANK[state]]


async def advance(device_id: str, entry_ids: Iterable[str], state: ReceiptState, *,
                  conn: BaseDBAsyncClient | None = None, **fields: Any) -> int:
    """Move these receipts of one speaker to `state` (with `fields`), those that are still before it."""
    ids = list(entry_ids)
    if not ids:
        return 0
    query = BroadcastReceipt.filter(device_id=device_id, entry_id__in=ids, state__in=earlier_than(state))
    if conn is not None:
        query = query.using_db(conn)
    return await query.update(state=state, **fields)
