"""Apply a batch of checked messages to the database, in one transaction.

Per batch, not per message: a handful of queries carry hundreds of messages. Within a batch,
messages are applied in arrival order, so a device's birth-then-death or seq order holds.
"""

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from contract import Upstream
from fleet.broadcast.ingest_hook import observe_batch
from fleet.children.store import apply_children
from fleet.ingest.bulk import (
    GapRow,
    insert_gaps,
    insert_telemetry_pg,
    is_postgres,
    load_by_pk,
    lock_streams,
    save_many,
    select_open_gaps,
    select_streams,
    update_gaps,
    update_streams,
)
from fleet.ingest.presence import Presence
from fleet.ingest.sequence import Gap, StreamState, Verdict
from fleet.ingest.silence import (
    BORN_FIELDS,
    HEARD_FIELDS,
    newest_sessions,
    note_birth,
    note_command_result,
    note_heard,
    note_reported_state,
)
from fleet.models import (
    RETIRED_STATUSES,
    Command,
    Device,
    DeviceStatus,
    EventRecord,
    HealthRecord,
    SeqStream,
    TelemetryRecord,
)
from fleet.ops.models import PresenceChange
from fleet.ota.progress import apply_progress
from fleet.relay.outbox import enqueue
from fleet.relay.routing import RouteTable

log = logging.getLogger(__name__)

StreamKey = tuple[str, int, int]  # (device id, epoch, ses)
# a telemetry row without a model instance: (device_id, epoch, ses, seq, device_ts, at, role, readings)
TelemetryRow = tuple[str, int, int, int, int | None, datetime, str, dict[str, Any]]
# child/… messages: numbered and deduplicated like the rest, counted as `reserved` (the contract's
# reserved child topics) and applied to the child_device table (fleet/children/store.py)
RESERVED_KINDS = frozenset({"child_birth", "child_death", "child_health"})


@dataclass
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    late: int = 0
    gaps_opened: int = 0
    presence: int = 0  # births and deaths, whether they counted or not
    reserved: int = 0  # child messages: numbered, applied to child_device (fleet/children/store.py)
    ota: int = 0  # ota/progress reports: numbered, applied to rollouts (fleet/ota/progress.py)
    relayed: int = 0  # relay deliveries made with the events (docs/relay.md, "Data flow")
    refused: list[tuple[Upstream, str]] = field(default_factory=list)  # (message, reason)


def _utc_from_ms(ms: int | None, fallback: datetime) -> datetime:
    if ms is None:
        return fallback
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return fallback


def telemetry_at(msg: Upstream, arrival: datetime) -> datetime:
    """The time a telemetry message's readings stand for (docs/fleet.md, "Telemetry time"): its
    `at_ms` (a sample taken before the message was sent, a window's start), else its `ts`, else
    (the device's clock unknown: `ts` null, and `at_ms` is read on that same clock) the arrival."""
    if msg.ts is None:
        return arrival
    at_ms = msg.body.get("at_ms")
    return _utc_from_ms(at_ms if isinstance(at_ms, int) else msg.ts, arrival)


@dataclass(slots=True)
class _StoredStream:
    """What a batch needs of a seq_stream row."""

    id: int
    max_seq: int
    received: int


class _Streams:
    """The (device, epoch, ses) streams a batch touches, locked and loaded once, written back once.

    Several fleet instances may receive messages of one stream at the same moment (a shared
    subscription): on PostgreSQL a stream's rows are read only under its lock (fleet/ingest/bulk.py
    lock_streams), held to the commit, so no instance writes back a state another one changed.
    """

    def __init__(self, conn: BaseDBAsyncClient) -> None:
        self.conn = conn
        self.rows: dict[StreamKey, _StoredStream] = {}
        self.states: dict[StreamKey, StreamState] = {}
        self.gaps_loaded: set[StreamKey] = set()
        self.queried: set[StreamKey] = set()
        self.received: set[StreamKey] = set()  # streams a message was accepted in, in this batch
        self.ends: set[tuple[StreamKey, int]] = set()  # ends applied in this batch

    async def load(self, keys: set[StreamKey]) -> None:
        """Lock the streams (PostgreSQL; one sorted order) and read their rows, in two statements."""
        keys = keys - self.queried
        if not keys:
            return
        self.queried |= keys
        ordered = sorted(keys)
        await lock_streams(self.conn, ordered)
        for row in await select_streams(self.conn, ordered):
            key = (row["device_id"], row["epoch"], row["ses"])
            self.rows[key] = _StoredStream(row["id"], row["max_seq"], row["received"])
            self.states[key] = StreamState(max_seq=row["max_seq"])

    async def load_gaps(self, wanted: Iterable[tuple[StreamKey, int]]) -> None:
        """The stored open gaps of every stream that a (key, seq) of the batch may fall into (a
        seq at or below the stream's highest), in one query before the batch's messages are taken."""
        keys = {key for key, seq in wanted if key not in self.gaps_loaded
                and (state := self.states.get(key)) is not None and state.max_seq is not None and seq <= state.max_seq}
        if not keys:
            return
        stored: dict[StreamKey, list[dict[str, Any]]] = defaultdict(list)
        for row in await select_open_gaps(self.conn, sorted(keys)):
            stored[(row["device_id"], row["epoch"], row["ses"])].append(row)
        for key in keys:
            self._add_gaps(key, self.states[key], stored.get(key, []))

    async def _load_gaps(self, key: StreamKey, state: StreamState) -> None:
        """One stream's stored open gaps, for a key `load_gaps` did not foresee."""
        self._add_gaps(key, state, await select_open_gaps(self.conn, [key]))

    def _add_gaps(self, key: StreamKey, state: StreamState, rows: list[dict[str, Any]]) -> None:
        stored = [Gap(r["first_seq"], r["last_seq"], r["id"]) for r in sorted(rows, key=lambda r: r["first_seq"])]
        # gaps opened earlier in this batch lie above every stored one
        state.gaps = stored + state.gaps
        self.gaps_loaded.add(key)

    async def _state(self, key: StreamKey) -> StreamState:
        state = self.states.get(key)
        if state is None:
            await self.load({key})  # a key the batch did not foresee (a new epoch, a `prev` stream)
            state = self.states.get(key)
        if state is None:  # a stream the database has never seen has no stored gaps
            state = self.states[key] = StreamState()
            self.gaps_loaded.add(key)
        return state

    async def accept(self, key: StreamKey, seq: int) -> Verdict:
        state = self.states.get(key)  # loaded with the batch, nearly always: no await per message
        if state is None:
            state = await self._state(key)
        # gaps only matter for numbers at or below the highest seen; load them lazily
        if state.max_seq is not None and seq <= state.max_seq and key not in self.gaps_loaded:
            await self._load_gaps(key, state)
        verdict = state.accept(seq)
        if verdict is not Verdict.DUPLICATE:
            self.received.add(key)
        return verdict

    async def has_messages(self, key: StreamKey) -> bool:
        """Whether any message of the stream has been accepted (a birth's `next_seq` is not one)."""
        await self._state(key)
        row = self.rows.get(key)
        return key in self.received or (row is not None and row.received > 0)

    async def start_at(self, key: StreamKey, first: int) -> None:
        """A birth's `next_seq`: the stream starts there, so nothing below it is a gap."""
        state = await self._state(key)
        if state.max_seq is not None and key not in self.gaps_loaded:
            await self._load_gaps(key, state)
        state.start_at(first)

    async def end_at(self, key: StreamKey, next_seq: int) -> None:
        """A later birth's `prev`: the stream's numbers stop below `next_seq`; the unseen ones are a gap."""
        if (key, next_seq) in self.ends:
            return
        self.ends.add((key, next_seq))
        (await self._state(key)).end_at(next_seq)

    async def save(self, now: datetime, counts: dict[StreamKey, tuple[int, int]]) -> int:
        """Write streams and gaps back; returns the number of gaps opened."""
        new_rows = []
        updates: list[tuple[int, int, int, int]] = []
        new_gaps: list[GapRow] = []
        changed_gaps: list[tuple[int, int, int]] = []
        for key, state in self.states.items():
            received, duplicates = counts.get(key, (0, 0))
            row = self.rows.get(key)
            if row is None:
                if state.max_seq is None:
                    continue
                new_rows.append(SeqStream(device_id=key[0], epoch=key[1], ses=key[2], max_seq=state.max_seq,
                                          received=received, duplicates=duplicates,
                                          first_at=now, last_at=now))
            elif received or duplicates or state.max_seq != row.max_seq:  # a birth's next_seq moves it too
                max_seq = state.max_seq if state.max_seq is not None else row.max_seq
                updates.append((row.id, max_seq, received, duplicates))
            for gap in state.changed:
                if gap.id is not None:
                    changed_gaps.append((gap.id, gap.first, gap.last))
                elif gap.first <= gap.last:  # a new gap that the batch did not fill again
                    new_gaps.append((key[0], key[1], key[2], gap.first, gap.last))
            state.changed.clear()
        await insert_gaps(self.conn, new_gaps, now)
        await update_gaps(self.conn, changed_gaps)
        await update_streams(self.conn, updates, now)
        if new_rows:
            await SeqStream.bulk_create(new_rows, using_db=self.conn)
        return len(new_gaps)


# the columns the ingest reads, or writes back unchanged (HEARD_FIELDS): the rest of a device
# (its tags, its last health, ...) is neither decoded nor written back by the ingest
INGEST_COLUMNS = ("id", "status", "online", "session", "epoch", "ended_session", "birth", "last_health_at",
                  "health_period_s", "desired_version")


async def _devices(conn: BaseDBAsyncClient, ids: set[str], desired: bool) -> dict[str, Device]:
    """The batch's devices, partial (INGEST_COLUMNS; `desired`: with their desired document, for
    the state_reported messages), the unknown ones created as discovered."""
    columns = (*INGEST_COLUMNS, "desired_doc") if desired else INGEST_COLUMNS
    known = {d.id: d for d in await load_by_pk(conn, Device, sorted(ids), columns)}
    missing = ids - known.keys()
    if missing:
        await Device.bulk_create([Device(id=i, status=DeviceStatus.DISCOVERED) for i in sorted(missing)],
                                 using_db=conn, ignore_conflicts=True)
        known.update({d.id: d for d in await load_by_pk(conn, Device, sorted(missing), columns)})
    return known


def _presence(device: Device) -> Presence:
    return Presence(session=device.session, ended=device.ended_session, online=device.online,
                    epoch=device.epoch, record=device.birth if isinstance(device.birth, dict) else None)


PRESENCE_FIELDS = ("online", "session", "ended_session", "epoch", "birth", "last_birth_at", "last_death_at",
                   "last_death_reason")
BIRTH_FIELDS = ["online", "session", "ended_session", "last_birth_at", "last_seen_at", "kind", "fw", "roles",
                "birth", "status", "updated_at"]  # not `epoch`: only the conditional update below writes it
SEEN_FIELDS = ("last_seen_at", "updated_at", *HEARD_FIELDS)  # written for every device heard from in a batch
HEALTH_FIELDS = ("last_health", "last_health_at")  # for the devices whose health a batch took as their last
REPORTED_FIELDS = ("reported_version", "reported_status")  # for the devices that reported a desired state
EPOCH_ATTEMPTS = 3  # another instance bumping the same device's epoch at the same moment: read again, retry


async def _apply_birth(conn: BaseDBAsyncClient, device: Device, msg: Upstream, now: datetime) -> bool:
    body = msg.body
    for _ in range(EPOCH_ATTEMPTS):
        before, epoch = device.session, device.epoch
        presence = _presence(device)
        if not presence.birth(msg.ses, retained=msg.retained, body=body):
            log.info("device %s: ignoring %s birth of session %d (on record: %s, ended: %s)", device.id,
                     "retained" if msg.retained else "live", msg.ses, before, device.ended_session)
            return False
        if presence.epoch == epoch:
            break
        # Conditional on the epoch read: when two instances apply the same birth, one bumps it and
        # the other reads the device again and finds that birth on record.
        if await Device.filter(id=device.id, epoch=epoch).using_db(conn).update(epoch=presence.epoch):
            log.warning("device %s: birth of session %d after session %s: its session counter went back; "
                        "epoch %d starts", device.id, msg.ses, before, presence.epoch)
            break
        fresh = await Device.filter(id=device.id).using_db(conn).get()
        for name in PRESENCE_FIELDS:
            setattr(device, name, getattr(fresh, name))
    else:
        log.error("device %s: epoch changed under %d attempts; birth of session %d not applied", device.id,
                  EPOCH_ATTEMPTS, msg.ses)
        return False
    device.epoch = presence.epoch
    device.online = True
    device.session = msg.ses
    device.ended_session = presence.ended
    device.last_birth_at = now
    device.last_seen_at = now
    note_birth(device, body, now)
    device.kind = body["kind"]
    device.fw = body["fw"]
    device.roles = body["roles"]
    device.birth = body
    if device.status == DeviceStatus.REGISTERED:
        device.status = DeviceStatus.ACTIVE
    device.updated_at = now  # a partial instance saves only fields it has; auto_now writes the save's time
    await device.save(using_db=conn, update_fields=[*BIRTH_FIELDS, *BORN_FIELDS])
    return True


def _previous_end(device: Device, birth: dict[str, Any] | None, ses: int) -> tuple[StreamKey, int] | None:
    """The stream the birth of stream `ses` says ended, and where: its `prev` (docs/protocol.md, "Streams").

    Applied (_Streams.end_at) once a message of stream `ses` is in: the device sends in stamp order,
    so everything of the stream before it has been sent by then, and what is missing was lost.
    """
    prev = birth.get("prev") if isinstance(birth, dict) and birth.get("ses") == ses else None
    return ((device.id, device.epoch, prev["ses"]), prev["next_seq"]) if isinstance(prev, dict) else None


def _prev_key(device: Device) -> set[StreamKey]:
    """The stream the device's birth on record says ended, to load with the batch's streams."""
    birth = device.birth
    prev = birth.get("prev") if isinstance(birth, dict) else None
    return {(device.id, device.epoch, prev["ses"])} if isinstance(prev, dict) else set()


async def _apply_death(conn: BaseDBAsyncClient, device: Device, msg: Upstream, now: datetime) -> bool:
    if not _presence(device).death(msg.ses):
        log.info("device %s: ignoring death of session %d (current %s)", device.id, msg.ses, device.session)
        return False
    # conditional, so a newer birth written meanwhile by another instance wins
    not_newer = Q(session__isnull=True) | Q(session__lte=msg.ses)
    await Device.filter(Q(id=device.id) & not_newer).using_db(conn).update(
        online=False, session=msg.ses, ended_session=msg.ses, last_death_at=now,
        last_death_reason=msg.body["reason"])
    device.online = False
    device.session = device.ended_session = msg.ses
    device.last_death_at = now
    device.last_death_reason = msg.body["reason"]
    return True


async def apply_batch(batch: Sequence[Upstream], now: datetime | None = None,
                      routes: RouteTable | None = None) -> BatchResult:
    """Store a batch of checked messages; refuse those from decommissioned devices. With `routes`,
    the events' relay deliveries are made in the same transaction (fleet/relay/outbox.py)."""
    now = now or datetime.now(UTC)
    result = BatchResult()
    if not batch:
        return result
    async with in_transaction() as conn:
        devices = await _devices(conn, {m.device_id for m in batch}, any(m.kind == "state_reported" for m in batch))
        streams = _Streams(conn)
        await streams.load({(m.device_id, devices[m.device_id].epoch, m.ses) for m in batch if m.kind != "death"}
                           | {k for d in devices.values() for k in _prev_key(d)})
        await streams.load_gaps(((m.device_id, devices[m.device_id].epoch, m.ses), m.seq) for m in batch
                                if m.seq is not None)
        counts: dict[StreamKey, list[int]] = defaultdict(lambda: [0, 0])
        health: list[HealthRecord] = []
        telemetry: list[TelemetryRow] = []
        events: list[EventRecord] = []
        seen: dict[str, Device] = {}
        healthy: set[str] = set()  # devices whose last_health this batch set
        reported: set[str] = set()  # devices whose reported state this batch set
        changes: list[PresenceChange] = []  # written with the batch (docs/ops.md, "Presence and its timings")
        progress: list[Upstream] = []
        children: list[tuple[Upstream, int]] = []  # child/… messages with their parent's epoch
        observed: list[Upstream] = []  # births and stored messages, for the broadcasts (receipts, clocks)
        for msg in batch:
            device = devices[msg.device_id]
            if device.status in RETIRED_STATUSES:  # decommissioned, or replaced on its asset
                result.refused.append((msg, device.status.value))
                continue
            if msg.kind == "birth":
                result.presence += 1
                observed.append(msg)
                counted = await _apply_birth(conn, device, msg, now)
                if counted:
                    changes.append(PresenceChange(device_id=device.id, at=now, online=True, reason="birth"))
                if counted or msg.ses == device.session:  # this epoch's birth, even one seen after its death
                    key = (msg.device_id, device.epoch, msg.ses)  # a birth can start a new epoch
                    end = _previous_end(device, msg.body, msg.ses)
                    if await streams.has_messages(key) and end is not None:  # its stream's messages came first
                        await streams.end_at(*end)
                    if msg.body.get("next_seq"):  # it describes the stream, whether it counted or not
                        await streams.start_at(key, msg.body["next_seq"])
                continue
            key = (msg.device_id, device.epoch, msg.ses)
            if msg.kind == "death":
                result.presence += 1
                was_online = device.online
                if await _apply_death(conn, device, msg, now) and was_online:
                    changes.append(PresenceChange(device_id=device.id, at=now, online=False,
                                                  reason=msg.body["reason"]))
                continue
            assert msg.seq is not None
            verdict = await streams.accept(key, msg.seq)
            if (end := _previous_end(device, device.birth, msg.ses)) is not None:
                await streams.end_at(*end)
            if verdict is Verdict.DUPLICATE:
                counts[key][1] += 1
                result.duplicates += 1
                continue
            counts[key][0] += 1
            result.late += verdict is Verdict.LATE
            seen[device.id] = device
            if msg.kind in RESERVED_KINDS:
                result.reserved += 1
                children.append((msg, device.epoch))
                continue
            if msg.kind == "ota_progress":
                result.ota += 1
                progress.append(msg)
                continue
            result.stored += 1
            observed.append(msg)
            if _collect(msg, device, now, health, telemetry, events):
                healthy.add(device.id)
            if msg.kind == "cmd_result":
                await _apply_command_result(conn, msg, now)
                await note_command_result(conn, device, msg)
            elif msg.kind == "state_reported":
                device.reported_version = msg.body["version"]
                device.reported_status = msg.body["status"]
                reported.add(device.id)
                note_reported_state(device, msg.body)
        await apply_progress(conn, progress, now)
        await apply_children(conn, children, now)
        result.gaps_opened = await streams.save(now, {k: (v[0], v[1]) for k, v in counts.items()})
        # ignore_conflicts: the unique (device, epoch, ses, seq) key is the last line against a replay
        # that a second fleet instance stored at the same moment
        if health:
            await HealthRecord.bulk_create(health, using_db=conn, ignore_conflicts=True)
        if telemetry and is_postgres(conn):
            await insert_telemetry_pg(conn, telemetry, now)
        elif telemetry:
            await TelemetryRecord.bulk_create([TelemetryRecord(
                device_id=d, epoch=e, ses=s, seq=q, device_ts=t, received_at=now, at=a, role=r, readings=j)
                for d, e, s, q, t, a, r, j in telemetry], using_db=conn, ignore_conflicts=True)
        if events:
            await EventRecord.bulk_create(events, using_db=conn, ignore_conflicts=True)
            if routes is not None and routes.rules:  # the routes match on whole devices (tags, ward, ...)
                whole = await load_by_pk(conn, Device, sorted({e.device_id for e in events}))
                result.relayed = await enqueue(conn, events, {d.id: d for d in whole}, now, routes)
        newest = newest_sessions(batch)
        for device in seen.values():
            device.last_seen_at = now
            device.updated_at = now  # present for save_many, whose auto_now writes its own time
            was_online = device.online
            note_heard(device, newest[device.id], now)
            if device.online and not was_online:
                changes.append(PresenceChange(device_id=device.id, at=now, online=True, reason="resumed"))
        # in one order (by id): two instances' batches touching the same devices never deadlock; the
        # second and third statements update rows the first has locked already
        ordered = sorted(seen)
        await save_many(conn, [seen[i] for i in ordered], SEEN_FIELDS)
        await save_many(conn, [seen[i] for i in ordered if i in healthy], HEALTH_FIELDS)
        await save_many(conn, [seen[i] for i in ordered if i in reported], REPORTED_FIELDS)
        if changes:
            await PresenceChange.bulk_create(changes, using_db=conn)
    # after the commit, in a transaction of its own: receipts and clocks never cost the batch, and the
    # ingest's device rows are never held while broadcast rows wait (delivery locks a device, then them)
    await observe_batch(observed, now)
    return result


def _collect(msg: Upstream, device: Device, now: datetime, health: list[HealthRecord],
             telemetry: list["TelemetryRow"], events: list[EventRecord]) -> bool:
    """Add the message's row; True when a health message became the device's last health."""
    assert msg.seq is not None
    body = msg.body
    common: dict[str, Any] = {"device_id": msg.device_id, "epoch": device.epoch, "ses": msg.ses, "seq": msg.seq,
                              "device_ts": msg.ts, "received_at": now}
    if msg.kind == "health":
        data = {k: v for k, v in body.items() if k not in ("v", "ses", "seq", "ts")}
        health.append(HealthRecord(**common, data=data))
        if device.last_health_at is None or device.last_health_at <= now:
            device.last_health = data
            device.last_health_at = now
            return True
    elif msg.kind == "telemetry":
        telemetry.append((msg.device_id, device.epoch, msg.ses, msg.seq, msg.ts, telemetry_at(msg, now),
                          body["role"], body["r"]))
    elif msg.kind == "event":
        events.append(EventRecord(**common, at=_utc_from_ms(msg.ts, now), event_id=body["id"],
                                  type=body["type"], phase=body["phase"], category=body["category"],
                                  data=body["data"], snapshot=body.get("snapshot")))
    return False


async def _apply_command_result(conn: BaseDBAsyncClient, msg: Upstream, now: datetime) -> None:
    detail = msg.body.get("detail")
    if isinstance(detail, str):  # Tortoise takes a str for JSON already encoded: encode it, or "12" becomes 12
        detail = json.dumps(detail)
    updated = await Command.filter(id=msg.body["id"], device_id=msg.device_id).using_db(conn).update(
        status=msg.body["status"], detail=detail, answered_at=now)
    if not updated:
        log.info("device %s answered unknown command %s", msg.device_id, msg.body["id"])
