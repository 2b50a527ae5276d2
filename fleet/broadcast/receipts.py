"""Receipts: per speaker and occurrence, what happened (docs/broadcasts.md, "Receipts").

A receipt only moves forward (RECEIPT_RANK): a late `delivered` never undoes a `started`, and a
final state (completed, failed, missed, not delivered, skipped) is never changed.
"""

import csv
import io
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q, Subquery
from tortoise.functions import Count
from tortoise.queryset import QuerySet

from contract import Upstream
from fleet.broadcast import clocks
from fleet.broadcast.models import RECEIPT_RANK, BroadcastReceipt, DeviceClock, ReceiptState, SpeakerDelivery
from fleet.liveness import DEFAULT_PERIOD_S
from fleet.models import Device


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


# -- from the ingest (docs/broadcasts.md, "Receipts") -----------------------------------------------

log = logging.getLogger(__name__)

# `b<broadcast id>.<occurrence, Unix s>`, then `@<occurrence, Unix ms>` for a scheduled entry
EVENT_ID = re.compile(r"^(b[1-9][0-9]{0,9}\.[0-9]{1,12})(?:@[0-9]{1,15})?$")
LATE_START = timedelta(seconds=120)  # the nodes' grace: a broadcast still starts this late (GRACE_MS)
SWEEP_ROWS = 500  # receipts looked at per statement of a sweep (two statements: pending, delivered)
SWEEP_EVERY = timedelta(seconds=10)
REASON_MAX = 200
# what a node sends in a playback event's `reason` for an occurrence too late to start
NODE_MISSED = "missed"
NEVER_APPLIED = "never applied before it passed"
NO_START = "no start reported"


@dataclass
class Counts:
    """What the ingest made of the receipts' messages since this process started (in memory, for
    the logs and the tests; not in the API)."""

    applied: int = 0  # receipts moved by a message
    unknown: int = 0  # a playback event whose id is no entry id, or has no receipt row
    stale: int = 0  # a message for a receipt already past that state (a late `delivered`, a repeat)
    failed: int = 0  # messages that raised (logged) and were passed over


COUNTS = Counts()


def entry_of(event_id: Any) -> str | None:
    """The entry id a playback event's id names, or None."""
    match = EVENT_ID.match(event_id) if isinstance(event_id, str) else None
    return match.group(1) if match and len(match.group(1)) <= 32 else None


def _at_ms(ms: int | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None
    except (OverflowError, OSError, ValueError):
        return None


def _reason(value: Any) -> str:
    return (value if isinstance(value, str) and value else "no reason given")[:REASON_MAX]


def _playback(msg: Upstream, offset: int | None, now: datetime) -> tuple[ReceiptState, dict[str, Any]] | None:
    """The state and fields a playback event moves its receipt to; None for one that moves nothing."""
    phase, data = msg.body["phase"], msg.body["data"]
    status = data.get("status")
    ts = msg.ts if isinstance(msg.ts, int) and not isinstance(msg.ts, bool) else None
    # the node's stamp on the fleet's clock; a node without a clock stamps null: the arrival
    at = (_at_ms(clocks.corrected_ms(ts, offset)) if ts is not None else None) or now
    if phase == "start" and status == "started":
        return ReceiptState.STARTED, {"started_at": at, "device_started_ms": ts, "offset_ms": offset}
    if phase == "end" and status == "completed":
        return ReceiptState.COMPLETED, {"ended_at": at}
    if phase in ("end", "once") and status == "failed":
        reason = _reason(data.get("reason"))
        state = ReceiptState.MISSED if reason == NODE_MISSED else ReceiptState.FAILED
        return state, {"ended_at": at, "reason": reason}
    return None


async def observe(conn: BaseDBAsyncClient, batch: Sequence[Upstream], now: datetime,
                  offsets: Mapping[str, int | None] | None = None) -> None:
    """Receipts from a batch: `state/reported` (delivered, not delivered) and `playback` events.
    `offsets`: the speakers' clock offsets (clocks.observe's answer), for the corrected times."""
    offsets = offsets or {}
    reports = [m for m in batch if m.kind == "state_reported"]
    events = [m for m in batch if m.kind == "event" and m.body.get("type") == "playback"]
    try:
        if reports:
            await _reports(conn, reports, now)
        if events:
            await _events(conn, events, offsets, now)
    except Exception as err:  # never lose the ingest's batch to a receipt
        COUNTS.failed += 1
        log.error("receipts: batch of %d passed over (%s: %.200s)", len(batch), type(err).__name__, err)


async def _reports(conn: BaseDBAsyncClient, reports: list[Upstream], now: datetime) -> None:
    deliveries = {d.device_id: d for d in await SpeakerDelivery.filter(
        device_id__in=sorted({m.device_id for m in reports})).using_db(conn)}
    for msg in reports:
        delivery = deliveries.get(msg.device_id)
        if delivery is None or delivery.sent_version is None or not isinstance(delivery.doc, dict):
            continue  # not a speaker the broadcasts sent a document to
        try:
            schedule = delivery.doc.get("schedule")
            entries = [e["id"] for e in schedule if isinstance(e, dict) and isinstance(e.get("id"), str)] \
                if isinstance(schedule, list) else []
            version = msg.body["version"]
            if msg.body["status"] == "applied" and version >= delivery.sent_version:
                moved = await advance(msg.device_id, entries, ReceiptState.DELIVERED, conn=conn, delivered_at=now)
            elif msg.body["status"] == "rejected" and version == delivery.sent_version and entries:
                # only what never was on the node: it keeps running the version it applied before
                moved = await BroadcastReceipt.filter(
                    device_id=msg.device_id, entry_id__in=entries, state=ReceiptState.PENDING,
                ).using_db(conn).update(state=ReceiptState.NOT_DELIVERED,
                                        reason=f"rejected: {_reason(msg.body.get('error'))}"[:REASON_MAX])
                log.warning("receipts: %s rejected its speaker document %d (%.200s): %d not delivered",
                            msg.device_id, version, msg.body.get("error"), moved)
            else:
                continue
            COUNTS.applied += moved
        except Exception as err:
            COUNTS.failed += 1
            log.error("receipts: state/reported of %s passed over (%s: %.200s)", msg.device_id,
                      type(err).__name__, err)


async def _events(conn: BaseDBAsyncClient, events: list[Upstream], offsets: Mapping[str, int | None],
                  now: datetime) -> None:
    keyed = [(m, entry_of(m.body.get("id"))) for m in events]
    wanted = {(m.device_id, e) for m, e in keyed if e is not None}
    known: set[tuple[str, str]] = set()
    if wanted:
        rows = await BroadcastReceipt.filter(
            device_id__in=sorted({d for d, _ in wanted}), entry_id__in=sorted({e for _, e in wanted}),
        ).using_db(conn).values_list("device_id", "entry_id")
        known = {(str(d), str(e)) for d, e in rows} & wanted
    unknown: list[str] = []
    for msg, entry in keyed:
        if entry is None or (msg.device_id, entry) not in known:
            COUNTS.unknown += 1
            unknown.append(f"{msg.device_id}:{str(msg.body.get('id'))[:64]}")
            continue
        try:
            change = _playback(msg, offsets.get(msg.device_id), now)
            if change is None:
                continue
            moved = await advance(msg.device_id, [entry], change[0], conn=conn, **change[1])
            COUNTS.applied += moved
            COUNTS.stale += moved == 0
        except Exception as err:
            COUNTS.failed += 1
            log.error("receipts: playback event %s of %s passed over (%s: %.200s)", entry, msg.device_id,
                      type(err).__name__, err)
    if unknown:
        log.warning("receipts: %d playback event(s) with no receipt, e.g. %s", len(unknown), unknown[0])


# -- the sweep -------------------------------------------------------------------------------------


def late_bound(period_s: int | None) -> timedelta:
    """How long after its occurrence a receipt waits for a start: the nodes' grace + a health period
    (the start event's message may wait behind the node's queue that long)."""
    return LATE_START + timedelta(seconds=period_s if period_s is not None else DEFAULT_PERIOD_S)


async def sweep(now: datetime) -> tuple[int, int]:
    """Occurrences that passed: `pending` → `not_delivered`; `delivered`/`clip_ready` of a speaker
    online for the whole bound → `missed`. An emergency's receipt counts from the end of its
    `in_force_until` instead (a speaker that comes back before then still plays it: "Emergency").
    At most SWEEP_ROWS of each per call, oldest first. Returns (not delivered, missed)."""
    oldest_due = now - LATE_START
    in_force = Q(emergency=True) & Q(broadcast__in_force_until__isnull=False) \
        & Q(broadcast__in_force_until__gte=oldest_due)
    columns = ("id", "device_id", "occurrence_at", "emergency", "broadcast__in_force_until")
    pending = await BroadcastReceipt.filter(state=ReceiptState.PENDING, occurrence_at__lt=oldest_due) \
        .exclude(in_force).order_by("occurrence_at").limit(SWEEP_ROWS).values_list(*columns)
    # a speaker offline now may still send the events it queued; so may one that came back lately
    online = Device.filter(online=True).filter(Q(last_birth_at__isnull=True) | Q(last_birth_at__lt=oldest_due))
    waiting = await BroadcastReceipt.filter(
        state__in=[ReceiptState.DELIVERED, ReceiptState.CLIP_READY], occurrence_at__lt=oldest_due,
        device_id__in=Subquery(online.values("id")),
    ).exclude(in_force).order_by("occurrence_at").limit(SWEEP_ROWS).values_list(*columns)
    devices = {d: (p, b) for d, p, b in await Device.filter(
        id__in=sorted({r[1] for r in [*pending, *waiting]})).values_list("id", "health_period_s", "last_birth_at")}

    def due(device_id: str, occurrence_at: datetime, emergency: bool, until: datetime | None,
            since_birth: bool) -> bool:
        period, born = devices.get(device_id, (None, None))
        bound = late_bound(period)
        start = max(occurrence_at, until) if emergency and until is not None else occurrence_at
        return start + bound < now and not (since_birth and born is not None and born + bound > now)

    lost = [i for i, d, at, emergency, until in pending if due(d, at, emergency, until, False)]
    missed = [i for i, d, at, emergency, until in waiting if due(d, at, emergency, until, True)]
    done_lost = await BroadcastReceipt.filter(id__in=lost, state=ReceiptState.PENDING).update(
        state=ReceiptState.NOT_DELIVERED, reason=NEVER_APPLIED) if lost else 0
    done_missed = await BroadcastReceipt.filter(id__in=missed, state__in=earlier_than(ReceiptState.STARTED)).update(
        state=ReceiptState.MISSED, reason=NO_START) if missed else 0
    if done_lost or done_missed:
        log.info("receipts: %d not delivered, %d missed", done_lost, done_missed)
    return done_lost, done_missed


class ReceiptSweep:
    """The worker's part: `sweep` every SWEEP_EVERY."""

    def __init__(self) -> None:
        self.last: datetime | None = None

    async def tick(self, now: datetime) -> None:
        if self.last is not None and self.last <= now < self.last + SWEEP_EVERY:
            return
        self.last = now
        await sweep(now)


# -- reading: the summary, the list, the CSV (the API and the pages call these) -------------------

WAITING = (ReceiptState.PENDING, ReceiptState.DELIVERED, ReceiptState.CLIP_READY)
OCCURRENCES_MAX = 1000  # occurrences in a summary at most (the newest)


def reason_group(reason: str | None) -> str:
    """A failure's reason without its detail: `bad clip: short header` → `bad clip`."""
    return (reason or "no reason given").split(":", 1)[0].strip()[:80] or "no reason given"


def _tally(rows: Iterable[tuple[str, str | None, int]], offline: int) -> dict[str, Any]:
    counts = {s.value: 0 for s in ReceiptState}
    failed_by: dict[str, int] = {}
    for state, reason, n in rows:
        counts[state] = counts.get(state, 0) + n
        if state == ReceiptState.FAILED:
            group = reason_group(reason)
            failed_by[group] = failed_by.get(group, 0) + n
    return {"total": sum(counts.values()), "played": counts[ReceiptState.COMPLETED],
            "started": counts[ReceiptState.STARTED], "failed": counts[ReceiptState.FAILED],
            "failed_by_reason": dict(sorted(failed_by.items(), key=lambda kv: (-kv[1], kv[0]))),
            "missed": counts[ReceiptState.MISSED], "not_delivered": counts[ReceiptState.NOT_DELIVERED],
            "skipped": counts[ReceiptState.SKIPPED], "pending": counts[ReceiptState.PENDING],
            "delivered": counts[ReceiptState.DELIVERED], "clip_ready": counts[ReceiptState.CLIP_READY],
            "offline": offline, "states": counts}


async def summary(broadcast_id: int) -> dict[str, Any]:
    """A broadcast's receipts counted, in all and per occurrence (the newest OCCURRENCES_MAX).

    played = completed; `failed_by_reason` groups the node's reasons by their head; `offline`: of
    the receipts still waiting (pending, delivered, clip ready), those whose speaker is not online now.
    """
    grouped = await BroadcastReceipt.filter(broadcast_id=broadcast_id).annotate(n=Count("id")) \
        .group_by("occurrence_at", "state", "reason").values_list("occurrence_at", "state", "reason", "n")
    offline_rows = await BroadcastReceipt.filter(broadcast_id=broadcast_id, state__in=list(WAITING)).exclude(
        device_id__in=Subquery(Device.filter(online=True).values("id")),
    ).annotate(n=Count("id")).group_by("occurrence_at").values_list("occurrence_at", "n")
    offline = {_utc(at): int(n) for at, n in offline_rows}
    by_occurrence: dict[datetime, list[tuple[str, str | None, int]]] = {}
    for at, state, reason, n in grouped:
        by_occurrence.setdefault(_utc(at), []).append((str(state), reason, int(n)))
    newest = sorted(by_occurrence, reverse=True)[:OCCURRENCES_MAX]
    return {"broadcast_id": broadcast_id,
            **_tally([row for rows in by_occurrence.values() for row in rows], sum(offline.values())),
            "occurrences": [{"occurrence_at": at, "entry_id": f"b{broadcast_id}.{int(at.timestamp())}",
                             **_tally(by_occurrence[at], offline.get(at, 0))} for at in sorted(newest)]}


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _selected(broadcast_id: int, occurrence: datetime | None, state: ReceiptState | None,
              device: str | None) -> QuerySet[BroadcastReceipt]:
    query = BroadcastReceipt.filter(broadcast_id=broadcast_id)
    if occurrence is not None:
        query = query.filter(occurrence_at=_utc(occurrence))
    if state is not None:
        query = query.filter(state=state)
    if device is not None:
        query = query.filter(device_id=device)
    return query


async def receipts(broadcast_id: int, *, occurrence: datetime | None = None, state: ReceiptState | None = None,
                   device: str | None = None, limit: int = 100, offset: int = 0
                   ) -> tuple[int, list[dict[str, Any]]]:
    """A broadcast's receipts by occurrence then speaker, each with its speaker's clock now:
    (how many match, the page)."""
    query = _selected(broadcast_id, occurrence, state, device)
    rows = await query.order_by("occurrence_at", "device_id").offset(offset).limit(limit)
    return await query.count(), await _with_clocks(rows)


async def _with_clocks(rows: list[BroadcastReceipt]) -> list[dict[str, Any]]:
    clocks_of = {c.device_id: c for c in await DeviceClock.filter(device_id__in=sorted({r.device_id for r in rows}))}
    return [public(r, clocks_of.get(r.device_id)) for r in rows]


def public(row: BroadcastReceipt, clock: DeviceClock | None) -> dict[str, Any]:
    started = row.started_at
    return {"broadcast_id": row.broadcast_id,  # type: ignore[attr-defined]
            "entry_id": row.entry_id, "occurrence_at": row.occurrence_at, "device_id": row.device_id,
            "version": row.version, "state": row.state.value, "reason": row.reason, "emergency": row.emergency,
            "delivered_at": row.delivered_at, "clip_ready_at": row.clip_ready_at, "started_at": started,
            "ended_at": row.ended_at, "device_started_ms": row.device_started_ms, "offset_ms": row.offset_ms,
            "start_delay_ms": None if started is None
            else round((started - row.occurrence_at).total_seconds() * 1000),
            "updated_at": row.updated_at,
            "clock": None if clock is None else {"offset_ms": clock.offset_ms, "flagged": clock.flagged,
                                                 "set_time_skew_ms": clock.set_time_skew_ms}}


CSV_ROWS_MAX = 200_000  # rows in one export at most (narrow it by occurrence, state or device)
CSV_CHUNK = 1000  # rows read per query while streaming
CSV_COLUMNS = ("broadcast_id", "entry_id", "occurrence_at", "device_id", "state", "reason", "emergency",
               "version", "delivered_at", "clip_ready_at", "started_at", "ended_at", "start_delay_ms",
               "device_started_ms", "offset_ms", "clock_offset_ms", "clock_flagged")
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str | int:
    """A cell: times in ISO 8601 UTC, numbers as numbers; text that a spreadsheet would take for a
    formula (=, +, -, @, tab, carriage return first) gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return _utc(value).isoformat().replace("+00:00", "Z")
    text = str(value)
    return "'" + text if text.startswith(FORMULA_LEADS) else text


async def csv_rows(broadcast_id: int, *, occurrence: datetime | None = None, state: ReceiptState | None = None,
                   device: str | None = None, rows_max: int = CSV_ROWS_MAX) -> AsyncIterator[str]:
    """The receipts as CSV text (header first), read CSV_CHUNK rows at a time by id, at most rows_max."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    last_id, written = 0, 0
    while written < rows_max:
        chunk = await _selected(broadcast_id, occurrence, state, device).filter(id__gt=last_id) \
            .order_by("id").limit(min(CSV_CHUNK, rows_max - written))
        if not chunk:
            return
        buffer.seek(0)
        buffer.truncate()
        for item in await _with_clocks(chunk):
            clock = item["clock"] or {}
            values = {**item, "clock_offset_ms": clock.get("offset_ms"), "clock_flagged": clock.get("flagged")}
            writer.writerow([csv_cell(values[c]) for c in CSV_COLUMNS])
        last_id, written = chunk[-1].id, written + len(chunk)
        yield buffer.getvalue()
