"""Apply a batch's child messages (already numbered and deduplicated by the ingest) to the
child_device rows, in the ingest's transaction. A message older than the last one applied to its
child (a store-and-forward replay arriving after newer ones) is counted but changes nothing."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q

from contract import Upstream
from fleet.children.models import HISTORY_KEEP, ChildChange, ChildDevice

ENVELOPE = ("v", "ses", "seq", "ts")
SAVED = ["kind", "fw", "hw", "present", "state", "state_since", "last_health", "last_health_at", "last_birth_at",
         "last_death_at", "last_death_reason", "last_seen_at", "epoch", "ses", "seq"]


def child_of(msg: Upstream) -> str:
    return msg.suffix.split("/")[1]


async def apply_children(conn: BaseDBAsyncClient, batch: Sequence[tuple[Upstream, int]], now: datetime) -> None:
    """`batch`: (message, the parent's epoch) in arrival order."""
    if not batch:
        return
    keys = {(m.device_id, child_of(m)) for m, _ in batch}
    query = Q()
    for parent_id, child_id in keys:
        query |= Q(parent_id=parent_id, child_id=child_id)
    rows = {(r.parent_id, r.child_id): r for r in await ChildDevice.filter(query).using_db(conn)}
    if keys - rows.keys():  # new children: created first, a second fleet instance's same row ignored
        await ChildDevice.bulk_create([ChildDevice(parent_id=p, child_id=c, first_seen_at=now, last_seen_at=now)
                                       for p, c in keys - rows.keys()], using_db=conn, ignore_conflicts=True)
        rows = {(r.parent_id, r.child_id): r for r in await ChildDevice.filter(query).using_db(conn)}
    changes: list[ChildChange] = []
    touched: dict[tuple[str, str], ChildDevice] = {}
    for msg, epoch in batch:
        key = (msg.device_id, child_of(msg))
        row = rows[key]
        assert msg.seq is not None
        if (epoch, msg.ses, msg.seq) <= (row.epoch, row.ses, row.seq):
            continue
        row.epoch, row.ses, row.seq = epoch, msg.ses, msg.seq
        row.last_seen_at = now
        touched[key] = row
        body: dict[str, Any] = msg.body
        if msg.kind == "child_birth":
            row.kind = body["kind"]
            row.fw = body.get("fw")
            row.hw = body.get("hw")
            if row.present is not True:
                changes.append(ChildChange(parent_id=key[0], child_id=key[1], at=now, what="birth"))
            row.present = True
            row.last_birth_at = now
        elif msg.kind == "child_death":
            if row.present is not False:
                changes.append(ChildChange(parent_id=key[0], child_id=key[1], at=now, what="death",
                                           detail=body["reason"]))
            row.present = False
            row.last_death_at = now
            row.last_death_reason = body["reason"]
        else:
            data = {k: v for k, v in body.items() if k not in ENVELOPE}
            row.last_health = data
            row.last_health_at = now
            state = data.get("state") if isinstance(data.get("state"), str) else None
            state = state[:32] if state else None
            if state != row.state:
                changes.append(ChildChange(parent_id=key[0], child_id=key[1], at=now, what="state", detail=state))
                row.state = state
                row.state_since = now
    for row in touched.values():
        await row.save(using_db=conn, update_fields=SAVED)
    if changes:
        await ChildChange.bulk_create(changes, using_db=conn)
        for parent_id, child_id in {(c.parent_id, c.child_id) for c in changes}:
            old = (await ChildChange.filter(parent_id=parent_id, child_id=child_id).using_db(conn)
                   .order_by("-at", "-id").offset(HISTORY_KEEP).limit(1).values_list("id", flat=True))
            if old:
                await ChildChange.filter(parent_id=parent_id, child_id=child_id, id__lte=old[0]).using_db(conn).delete()
