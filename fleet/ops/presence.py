"""Presence changes as counts, for the rules that watch them (`flapping`, `crash_loop`).

The rows are written by the ingest (births, deaths, a numbered message bringing a device back)
and by the silence sweep, each in the transaction of the change it records (docs/ops.md,
"Presence and its timings"). Here the database does the counting: one grouped query per chunk of
devices, at most one row back per device.
"""

from collections.abc import Sequence
from datetime import datetime

from tortoise.functions import Count

from fleet.ops.models import PresenceChange

IDS_PER_QUERY = 500  # device ids bound into one statement (SQLite's host-parameter limit is far above)


async def _count(device_ids: Sequence[str] | None, since: datetime, reason: str | None) -> dict[str, int]:
    query = PresenceChange.filter(at__gte=since)
    if reason is not None:
        query = query.filter(reason=reason)
    chunks: list[list[str] | None]
    if device_ids is None:
        chunks = [None]
    else:
        unique = sorted(set(device_ids))
        chunks = [unique[i:i + IDS_PER_QUERY] for i in range(0, len(unique), IDS_PER_QUERY)]
    counts: dict[str, int] = {}
    for chunk in chunks:
        narrowed = query if chunk is None else query.filter(device_id__in=chunk)
        rows = await narrowed.annotate(n=Count("id")).group_by("device_id").values_list("device_id", "n")
        for device_id, n in rows:
            counts[str(device_id)] = int(n)
    return counts


async def changes_since(device_ids: Sequence[str] | None, since: datetime) -> dict[str, int]:
    """Per device (all devices: None), its presence changes at or after `since`: every PresenceChange
    row is one (a birth that counted, a death or silent verdict that took it offline, a resumption).
    Devices with none are left out."""
    return await _count(device_ids, since, None)


async def births_since(device_ids: Sequence[str] | None, since: datetime) -> dict[str, int]:
    """Per device (all devices: None), its births that counted at or after `since` (reason `birth`).
    Devices with none are left out."""
    return await _count(device_ids, since, "birth")
