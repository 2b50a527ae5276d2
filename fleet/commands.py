"""Command expiry: a command still `sent` when its `expires_ms` has passed is `expired` (the device
refuses it after that moment), with an audit entry `command.expired`. Rows are claimed with
`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL and changed conditionally on still being `sent`,
so with several fleet instances each command expires once (docs/fleet.md, "Several instances")."""

import logging
from datetime import datetime

from tortoise.transactions import in_transaction

from fleet.models import AuditEntry, Command

log = logging.getLogger(__name__)

EXPIRE_BATCH = 500  # commands expired per statement; the rest at the next turn
ACTOR = "fleet"


async def expire_commands(now: datetime) -> int:
    """Expire one batch of overdue commands; how many."""
    now_ms = int(now.timestamp() * 1000)
    async with in_transaction() as conn:
        rows = await (Command.filter(status="sent", expires_ms__lt=now_ms).order_by("expires_ms")
                      .limit(EXPIRE_BATCH).select_for_update(skip_locked=True).using_db(conn)
                      .values_list("id", "device_id", "name"))
        if not rows:
            return 0
        ids = [str(i) for i, _, _ in rows]
        changed = await Command.filter(id__in=ids, status="sent").using_db(conn).update(
            status="expired", answered_at=now)
        if changed != len(rows):  # SQLite has no row locks: another writer answered some meanwhile
            expired = set(await Command.filter(id__in=ids, status="expired", answered_at=now).using_db(conn)
                          .values_list("id", flat=True))
            rows = [r for r in rows if r[0] in expired]
        await AuditEntry.bulk_create([AuditEntry(actor=ACTOR, action="command.expired", target=str(device)[:200],
                                                 detail={"id": str(i), "name": str(name)})
                                      for i, device, name in rows], using_db=conn)
    log.info("commands: %d expired without an answer", len(rows))
    return len(rows)


class CommandExpiry:
    """The ops worker's part (fleet/ops/service.py)."""

    async def tick(self, now: datetime) -> None:
        while await expire_commands(now) == EXPIRE_BATCH:
            pass
