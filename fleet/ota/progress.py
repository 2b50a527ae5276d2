"""The ingest's part of rollouts: `ota/progress` reports move a device's state in its rollout.

Called by fleet/ingest/store.py inside the batch's transaction, after the reports were numbered
(dedupe, gaps) like every upstream message. A report names its release, not its offer: it is
the device's row in the newest rollout of that release that offered it something. A report
that matches no offered row, or names a status docs/ota.md does not list, changes nothing.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from contract import Upstream
from fleet.ota.rollout_models import RolloutDevice
from fleet.ota.states import TERMINAL, accepts, reason_of, reported_state

SAVED = ["state", "reason", "pct", "reported_at", "done_at", "updated_at"]


@dataclass
class ProgressResult:
    applied: int = 0  # reports that moved a state (or its pct, reason)
    ignored: int = 0  # reports for no offered row, out of order, or with an unknown status


async def apply_progress(conn: BaseDBAsyncClient, reports: Sequence[Upstream], now: datetime) -> ProgressResult:
    result = ProgressResult()
    if not reports:
        return result
    wanted = {(m.device_id, str(m.body["release"])) for m in reports}
    rows: dict[tuple[str, str], RolloutDevice] = {}
    # by two IN lists (a chain of hundreds of ORs is too deep for the query builder); the newest
    # rollout's row first: rows are made in rollout order
    for row in await (RolloutDevice.filter(device_id__in=list({d for d, _ in wanted}),
                                           rollout__release_name__in=list({r for _, r in wanted}),
                                           offered_at__isnull=False)
                      .using_db(conn).select_related("rollout").order_by("-id")):
        key = (row.device_id, row.rollout.release_name)
        if key in wanted:
            rows.setdefault(key, row)
    changed: dict[int, RolloutDevice] = {}
    for msg in reports:
        found = rows.get((msg.device_id, str(msg.body["release"])))
        state = reported_state(str(msg.body["status"]))
        if found is None or state is None or not accepts(found.state, found.reason, state):
            result.ignored += 1
            continue
        row = found
        row.state = state
        row.reason = reason_of(msg.body.get("detail"))
        pct = msg.body.get("pct")
        if isinstance(pct, int | float) and not isinstance(pct, bool):
            row.pct = int(pct)
        row.reported_at = now
        row.done_at = now if state in TERMINAL else None
        changed[row.id] = row
        result.applied += 1
    for row in changed.values():
        await row.save(using_db=conn, update_fields=SAVED)
    return result
