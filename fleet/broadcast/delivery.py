"""Delivery of the broadcast schedules to the speakers (docs/broadcasts.md, "Delivery").

One SpeakerDelivery row per speaker says when its document is due for a recompute (`due_at`). The
broadcasts' routes, quiet hours, volume profiles and the ingest (a speaker's birth) mark speakers
due; the document itself says when it needs a refresh (documents.Built.refresh_at). Each turn of
the BroadcastWorker (`tick`):

1. documents computed but not published (the broker was down: `unsent`) go out once the link is up;
2. due speakers are claimed (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, so several fleet
   instances share them) and leased: their `due_at` moves LEASE ahead, so another instance leaves
   them alone until this one is done or dead;
3. each one's document is built (documents.build) and, when it differs from the `speaker` key of
   the device's desired state, merged into it (other keys kept) as the next version (the version
   CAS of fleet/desired.py) and published retained; at most once per REFRESH_MIN per speaker.
   Receipts: `pending` for each entry sent, `skipped` with the reason for quiet hours and conflict
   losers, and `skipped` "withdrawn" for a future entry no longer scheduled there; SpeakerClip rows
   `wanted` for its clips (the clip sender fetches them onto the node).
"""

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from contract import ContractError, Upstream, make_desired
from fleet.broadcast import documents
from fleet.broadcast.calendar import SPEAKER_ROLE, Targets, quiet_hours, resolve, stored_timing
from fleet.broadcast.documents import Built, ClipRef, EmergencyView, Program, SpeakerInfo
from fleet.broadcast.library import Library
from fleet.broadcast.models import (
    Broadcast,
    BroadcastReceipt,
    BroadcastStatus,
    Clip,
    ClipFile,
    EmergencyDispatch,
    Level,
    ReceiptState,
    SpeakerClip,
    SpeakerDelivery,
    WardVolume,
)
from fleet.broadcast.receipts import advance
from fleet.broadcast.schedule import Occurrence, QuietHours, instant
from fleet.desired import DesiredChanged, claim_desired
from fleet.ingest.link import LinkError, MqttLink
from fleet.models import Device, DeviceStatus
from fleet.settings import Settings

log = logging.getLogger(__name__)

CLAIM_MAX = 200  # speakers recomputed in one turn; the rest stay due for the next
AT_ONCE = 8  # speakers built, stored and published concurrently (PostgreSQL uses as many connections)
LEASE = timedelta(seconds=60)  # a claimed speaker is left alone this long by the other instances
UNSENT_MAX = 500  # unsent documents retried in one turn
OCCURRENCES_MAX = 500  # per broadcast within the window
CAS_TRIES = 3  # another writer of the desired state in between: read again, at most this often
SHRINK_STEP = 4  # a document over the desired-state size bound: this many fewer entries, again
PLAYED = [ReceiptState.STARTED, ReceiptState.COMPLETED, ReceiptState.FAILED, ReceiptState.MISSED]
LIVE = [ReceiptState.PENDING, ReceiptState.DELIVERED, ReceiptState.CLIP_READY]


def canonical(built: Built) -> str:
    """SHA-256 of what a build decided: the document, its entries' versions, the skipped and the cut
    occurrences. The same as on record: nothing to write but the next due time."""
    decided = {"doc": built.doc, "versions": [[e.id, e.version] for e in built.entries],
               "skipped": [[k.id, k.reason] for k in built.skipped], "cut": [e.id for e in built.cut]}
    return hashlib.sha256(json.dumps(decided, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def mark_due(device_ids: Iterable[str], reason: str, now: datetime | None = None, *,
                   conn: BaseDBAsyncClient | None = None) -> int:
    """Make these speakers' documents due now (an upsert: never fails on a row another writer made)."""
    ids = sorted(set(device_ids))
    if not ids:
        return 0
    at = now or datetime.now(UTC)
    rows = [SpeakerDelivery(device_id=i, due_at=at, reason=reason[:64]) for i in ids]
    await SpeakerDelivery.bulk_create(rows, on_conflict=["device_id"], update_fields=["due_at", "reason"],
                                      using_db=conn)
    return len(ids)


async def mark_targets_due(targets: Iterable[Mapping[str, Sequence[str]]], reason: str) -> int:
    """Mark due every speaker the targets name (a broadcast's old and new targets after an edit)."""
    found: set[str] = set()
    for target in targets:
        found.update(await resolve(Targets.of(target)))
    return await mark_due(found, reason)


async def mark_ward_due(ward: str, reason: str) -> int:
    """Mark due the speakers of a ward (its quiet hours or volume profile changed)."""
    return await mark_targets_due([{"wards": [ward]}], reason)


async def observe(conn: BaseDBAsyncClient, batch: Sequence[Upstream], now: datetime) -> None:
    """From the ingest, inside the batch's transaction: a speaker's birth makes its document due
    now (re-delivery after a reconnect); a `state_reported` `applied` records the version."""
    born: set[str] = set()
    applied: dict[str, int] = {}
    for msg in batch:
        try:
            if msg.kind == "birth" and SPEAKER_ROLE in (msg.body.get("roles") or ()):
                born.add(msg.device_id)
            elif msg.kind == "state_reported" and msg.body.get("status") == "applied":
                applied[msg.device_id] = max(int(msg.body["version"]), applied.get(msg.device_id, 0))
        except (TypeError, ValueError, KeyError) as err:
            log.warning("delivery: passed over a %s of %s (%s)", msg.kind, msg.device_id, err)
    if born:
        await mark_due(born, "birth", now, conn=conn)
    for device_id, version in applied.items():
        await SpeakerDelivery.filter(Q(applied_version__isnull=True) | Q(applied_version__lt=version),
                                     device_id=device_id).using_db(conn).update(applied_version=version)


@dataclass(slots=True)
class _Context:
    """What one turn reads once for every speaker it recomputes."""

    broadcasts: list[Broadcast]
    occurrences: dict[int, list[Occurrence]]
    durations: dict[int, timedelta]  # clip id -> duration
    files: dict[tuple[int, str], tuple[str, int]]  # (clip id, kind) -> (sha256, bytes)
    quiet: dict[str, QuietHours]
    volumes: dict[str, list[dict[str, Any]]]


class Delivery:
    """The delivery part of the BroadcastWorker: `tick(now)`."""

    def __init__(self, link: MqttLink, settings: Settings) -> None:
        self.link = link
        self.settings = settings
        self.tz = ZoneInfo(settings.timezone)
        self.horizon = timedelta(days=settings.broadcast_horizon_days)
        self._library: Library | None = None
        self._seeded = False
        self.sent = 0  # documents published (counters for tests and logs)
        self.computed = 0

    @property
    def library(self) -> Library:
        if self._library is None:
            self._library = Library(self.settings)
        return self._library

    async def tick(self, now: datetime) -> None:
        if not self._seeded:  # speakers known before delivery ran (or whose row was lost) start due
            known = set(await SpeakerDelivery.all().values_list("device_id", flat=True))
            alive = await Device.exclude(status=DeviceStatus.DECOMMISSIONED).values_list("id", "roles")
            await mark_due([str(i) for i, roles in alive if isinstance(roles, list) and SPEAKER_ROLE in roles
                            and i not in known], "start", now)
            self._seeded = True
        await self.send_unsent()
        claimed = await self._claim(now)
        if not claimed:
            return
        context = await self._context(now)
        gate = asyncio.Semaphore(AT_ONCE)

        async def one(device_id: str, lease: datetime) -> None:
            async with gate:
                try:
                    await self.deliver(device_id, lease, context, now)
                except Exception as err:  # one speaker's failure is not the others'
                    log.error("delivery: %s failed (%s: %.200s); due again in %s", device_id, type(err).__name__,
                              err, LEASE)

        await asyncio.gather(*(one(device_id, lease) for device_id, lease in claimed))

    # -- claiming -------------------------------------------------------------------------------

    async def _claim(self, now: datetime) -> list[tuple[str, datetime]]:
        lease = now + LEASE
        async with in_transaction() as conn:
            rows = await (SpeakerDelivery.filter(due_at__lte=now).order_by("due_at").limit(CLAIM_MAX)
                          .select_for_update(skip_locked=True).using_db(conn))
            ids = [row.device_id for row in rows]
            if ids:
                await SpeakerDelivery.filter(device_id__in=ids).using_db(conn).update(due_at=lease)
        return [(i, lease) for i in ids]

    async def _context(self, now: datetime) -> _Context:
        live = await Broadcast.filter(
            Q(ends_at__isnull=True) | Q(ends_at__gt=now - documents.LOOKBACK) | Q(in_force_until__gt=now),
            status=BroadcastStatus.ACTIVE).order_by("id")
        occurrences: dict[int, list[Occurrence]] = {}
        for broadcast in live:
            timing = stored_timing(broadcast)
            since = now - documents.LOOKBACK
            if broadcast.in_force_until is not None and broadcast.in_force_until > now:  # from its start
                since = min(since, instant(timing.start, timing.tz))
            occurrences[broadcast.id] = timing.occurrences(since, now + self.horizon, OCCURRENCES_MAX)
        clip_ids = {b.clip_id for b in live}  # type: ignore[attr-defined]
        durations = {c.id: timedelta(milliseconds=c.duration_ms) for c in await Clip.filter(id__in=clip_ids)}
        files = {(f.clip_id, f.kind): (f.sha256, f.bytes)  # type: ignore[attr-defined]
                 for f in await ClipFile.filter(clip_id__in=clip_ids)}
        volumes = {row.ward: list(row.steps) for row in await WardVolume.all()}
        return _Context(list(live), occurrences, durations, files, await quiet_hours(), volumes)

    # -- one speaker ----------------------------------------------------------------------------

    async def build_for(self, device: Device, context: _Context, now: datetime,
                        normal_max: int = documents.NORMAL_MAX) -> Built:
        kind = device.kind if device.kind in documents.KINDS else "esp32"
        tags = frozenset(t for t in (device.tags or []) if isinstance(t, str))
        speaker = SpeakerInfo(device.id, kind, device.ward, tags)
        programs: list[Program] = []
        emergencies: list[int] = []
        for broadcast in context.broadcasts:
            if not speaker.targeted_by(broadcast.targets):
                continue
            clip_id: int = broadcast.clip_id  # type: ignore[attr-defined]
            file = context.files.get((clip_id, kind))
            clip = None
            if file is not None:
                url = self._url(device.id, file[0], now) if kind == "pi" else ""
                clip = ClipRef(file[0], int(file[1]), url)
            if broadcast.level == Level.EMERGENCY:
                emergencies.append(broadcast.id)
            programs.append(Program(broadcast.id, broadcast.version, broadcast.level, broadcast.order,
                                    context.durations.get(clip_id, timedelta(0)),
                                    context.occurrences.get(broadcast.id, []), clip, broadcast.title,
                                    broadcast.in_force_until, broadcast.created_at))
        view = EmergencyView()
        if emergencies:
            dispatch = dict(await EmergencyDispatch.filter(device_id=device.id, broadcast_id__in=emergencies)
                            .values_list("broadcast_id", "state"))
            played = await BroadcastReceipt.filter(device_id=device.id, broadcast_id__in=emergencies,
                                                   state__in=PLAYED).values_list("entry_id", flat=True)
            view = EmergencyView({int(k): str(v) for k, v in dispatch.items()}, device.last_birth_at,
                                 frozenset(str(e) for e in played))
        return documents.build(speaker, programs, now, tz=self.tz, quiet=context.quiet,
                               volume_steps=context.volumes.get(device.ward), emergency=view, horizon=self.horizon,
                               normal_max=normal_max)

    def _url(self, device_id: str, sha256: str, now: datetime) -> str:
        # the expiry is rounded down to a quarter of the token's life, so the same clip gets the same
        # URL (and the document stays the same) for that long; it still lives 3/4 of the TTL at least
        ttl = self.library.token_ttl_s
        step = max(60, ttl // 4)
        expires = (int(now.timestamp()) + ttl) // step * step
        token, _ = self.library.token(device_id, sha256, now_s=expires - ttl)
        return f"{self.settings.public_base_url()}/audio/files/{sha256}?t={token}"

    async def deliver(self, device_id: str, lease: datetime, context: _Context, now: datetime) -> None:
        row = await SpeakerDelivery.get_or_none(device_id=device_id)
        device = await Device.get_or_none(id=device_id)
        if row is None:
            return
        if (device is None or device.status == DeviceStatus.DECOMMISSIONED
                or SPEAKER_ROLE not in (device.roles or [])):
            # nothing for it: due again only when marked (a birth as a speaker, a broadcast naming it)
            await SpeakerDelivery.filter(device_id=device_id, due_at=lease).update(due_at=None, reason="not a speaker")
            return
        self.computed += 1
        for _ in range(CAS_TRIES):
            built = await self.build_for(device, context, now)
            current = (device.desired_doc or {}).get("speaker")
            same = built.doc == current or (current is None and documents.empty(built.doc))
            if same:
                if canonical(built) == row.doc_sha256:  # nothing new decided: only the next due time
                    await SpeakerDelivery.filter(device_id=device_id, due_at=lease).update(
                        due_at=built.refresh_at, reason=row.reason)
                else:
                    await self._record(device, row, built, lease, now, None)
                return
            if row.sent_at is not None and row.sent_at + documents.REFRESH_MIN > now:
                # sent a moment ago: coalesce, the next one goes out when the interval is over
                await SpeakerDelivery.filter(device_id=device_id, due_at=lease).update(
                    due_at=row.sent_at + documents.REFRESH_MIN)
                return
            doc = {**(device.desired_doc or {}), "speaker": built.doc}
            normal_max = documents.NORMAL_MAX
            while True:
                try:
                    make_desired(device.id, device.desired_version + 1, doc)
                    break
                except ContractError:
                    if normal_max <= 0:
                        raise
                    normal_max = max(0, normal_max - SHRINK_STEP)  # over the size bound: fewer entries
                    built = await self.build_for(device, context, now, normal_max)
                    doc = {**(device.desired_doc or {}), "speaker": built.doc}
            try:
                await self._record(device, row, built, lease, now, doc)
            except DesiredChanged:
                await device.refresh_from_db()
                continue
            await self.publish(device.id)
            return
        log.warning("delivery: %s's desired state kept changing; due again in %s", device_id, LEASE)

    async def _record(self, device: Device, row: SpeakerDelivery, built: Built, lease: datetime, now: datetime,
                      doc: dict[str, Any] | None) -> None:
        """Store what was computed (and, with `doc`, claim its version): one transaction."""
        async with in_transaction() as conn:
            fields: dict[str, Any] = {"doc": built.doc, "doc_sha256": canonical(built)}
            if doc is not None:
                version, _, _ = await claim_desired(device.id, device.desired_version, doc, conn=conn)
                fields.update(sent_version=version, sent_at=now, unsent=True)
            await SpeakerDelivery.filter(device_id=device.id).using_db(conn).update(**fields)
            await SpeakerDelivery.filter(device_id=device.id, due_at=lease).using_db(conn).update(
                due_at=built.refresh_at, reason=row.reason)
            await self._receipts(conn, device.id, built, now)
            await self._clips(conn, device.id, built)

    async def _receipts(self, conn: BaseDBAsyncClient, device_id: str, built: Built, now: datetime) -> None:
        entries = {e.id: e for e in built.entries}
        skipped = {k.id: k for k in built.skipped}
        keep = set(entries) | {e.id for e in built.cut} | set(skipped)
        # what is on record: the entries and skips of this build, and the speaker's future live receipts
        wanted = Q(state__in=LIVE, emergency=False, occurrence_at__gt=now)
        if entries or skipped:
            wanted = wanted | Q(entry_id__in=list(entries) + list(skipped))
        rows = await BroadcastReceipt.filter(wanted, device_id=device_id).using_db(conn).values_list(
            "entry_id", "state", "version", "emergency")
        known = {str(r[0]): (ReceiptState(r[1]), int(r[2]), bool(r[3])) for r in rows}
        new = [BroadcastReceipt(broadcast_id=e.broadcast_id, device_id=device_id, entry_id=e.id,
                                occurrence_at=e.start, version=e.version, emergency=e.emergency)
               for e in entries.values() if e.id not in known]
        new += [BroadcastReceipt(broadcast_id=k.broadcast_id, device_id=device_id, entry_id=k.id,
                                 occurrence_at=k.start, version=k.version, state=ReceiptState.SKIPPED, reason=k.reason)
                for k in skipped.values() if k.id not in known]
        if new:  # ignore_conflicts: another instance may have made one meanwhile
            await BroadcastReceipt.bulk_create(new, ignore_conflicts=True, using_db=conn)
        for e in entries.values():
            state, version, _ = known.get(e.id, (None, e.version, False))
            if state == ReceiptState.SKIPPED:  # plays again: its winner cancelled, the quiet hours changed
                await BroadcastReceipt.filter(device_id=device_id, entry_id=e.id, state=ReceiptState.SKIPPED
                                              ).using_db(conn).update(state=ReceiptState.PENDING, reason=None,
                                                                      version=e.version)
            elif state == ReceiptState.PENDING and version != e.version:  # an edit kept it
                await BroadcastReceipt.filter(device_id=device_id, entry_id=e.id, state=ReceiptState.PENDING
                                              ).using_db(conn).update(version=e.version)
        reasons: dict[str, list[str]] = {}
        for k in skipped.values():
            if k.id in known and known[k.id][0] != ReceiptState.SKIPPED:
                reasons.setdefault(k.reason, []).append(k.id)
        for reason, ids in reasons.items():
            await advance(device_id, ids, ReceiptState.SKIPPED, conn=conn, reason=reason)
        # future entries given before and no longer scheduled here (cancelled, edited, untargeted)
        withdrawn = [i for i, (state, _, emergency) in known.items()
                     if i not in keep and state in LIVE and not emergency]
        if withdrawn:
            await advance(device_id, withdrawn, ReceiptState.SKIPPED, conn=conn,
                          reason="withdrawn: no longer scheduled on this speaker")

    async def _clips(self, conn: BaseDBAsyncClient, device_id: str, built: Built) -> None:
        clips = built.clips
        if clips:
            await SpeakerClip.bulk_create([SpeakerClip(device_id=device_id, name=c.name, sha256=c.sha256,
                                                       bytes=c.bytes) for c in clips],
                                          ignore_conflicts=True, using_db=conn)

    # -- publishing -----------------------------------------------------------------------------

    async def publish(self, device_id: str) -> bool:
        """Publish the device's current desired state retained; True when the broker took it."""
        device = await Device.get_or_none(id=device_id)
        if device is None or device.desired_doc is None or device.status == DeviceStatus.DECOMMISSIONED:
            await SpeakerDelivery.filter(device_id=device_id).update(unsent=False)
            return False
        version = device.desired_version
        try:
            topic, payload = make_desired(device.id, version, device.desired_doc)
            await self.link.publish(topic, payload, retain=True)
        except LinkError as err:
            log.warning("delivery: %s's document (version %d) not sent: %s; sent when the link is back",
                        device_id, version, err)
            return False
        except ContractError as err:  # another writer's document broke the bound: nothing to resend
            log.error("delivery: %s's desired state (version %d) cannot be sent: %s", device_id, version, err)
        await SpeakerDelivery.filter(device_id=device_id, unsent=True, sent_version__lte=version).update(unsent=False)
        self.sent += 1
        return True

    async def send_unsent(self) -> int:
        """The documents stored while the broker was down, now that the link is up."""
        if not self.link.connected.is_set():
            return 0
        waiting = await SpeakerDelivery.filter(unsent=True).order_by("sent_at").limit(UNSENT_MAX).values_list(
            "device_id", flat=True)
        sent = 0
        for device_id in waiting:
            if not await self.publish(str(device_id)):
                if not self.link.connected.is_set():
                    break
                continue
            sent += 1
        return sent
