"""The emergency path (docs/broadcasts.md, "Emergency").

`start_emergency` (the API's `POST /api/broadcasts/emergency` and the emergency page both call it)
creates an `emergency` broadcast starting now, stored and versioned as the calendar stores any
(its conflicts are reviewed after the commands are out and listed, never blocking: it wins them by
level), with `in_force_until`, and in the same transaction one EmergencyDispatch per targeted speaker:
- online and holding the clip (its SpeakerClip `ready`): `speaker.broadcast {"id": <entry id>,
  "clip": <clip name>, "emergency": true}` expiring in COMMAND_TTL_S, state `sent`;
- online without it: `waiting_clip` and a clip_fetch at once; the command goes when the fetch
  answers ok (the tick); not ready within CLIP_WAIT_S, the clip failed, or the speaker gone
  offline: `fallback`;
- offline (or a kind with no variant of the clip): `fallback` at once.
The commands then go out concurrently. An `ok` answer → `acked` (its receipt `delivered`); an
error, or no answer by the command's expiry + ANSWER_MARGIN_S (the tick) → `fallback`. Every
`fallback` makes that speaker's delivery due (SpeakerDelivery.due_at = now, worker nudged): its
desired state then carries the entry. Receipts (`pending`, emergency) are made for every
targeted speaker before any command goes out.
"""

import asyncio
import logging
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from contract import ContractError, Upstream
from fleet.broadcast import clips
from fleet.broadcast.calendar import Calendar, CalendarError, Definition, Review, Targets, resolve, timing_of
from fleet.broadcast.clips import READY, ClipSender, Send, clip_name, command, publish_all
from fleet.broadcast.models import (
    Broadcast,
    BroadcastReceipt,
    BroadcastStatus,
    ClipFile,
    EmergencyDispatch,
    Level,
    ReceiptState,
    SpeakerClip,
    SpeakerDelivery,
)
from fleet.broadcast.receipts import advance
from fleet.broadcast.schedule import local_start
from fleet.models import Command, Device, DeviceStatus

if TYPE_CHECKING:
    from fleet.broadcast.service import BroadcastWorker
    from fleet.runtime import Runtime

log = logging.getLogger(__name__)

BROADCAST_COMMAND = "speaker.broadcast"
STOP_COMMAND = "speaker.stop"
COMMAND_TTL_S = 30  # the command's expiry (docs/broadcasts.md): a node that gets it later does not play it
ANSWER_MARGIN_S = 5  # the fallback waits this much past the expiry: a node whose clock lags a little and
# played it just before its expiry has answered by then (never both the command and the entry)
CLIP_WAIT_S = 120  # a speaker without the clip: its fetch must answer ok within this
IN_FORCE_DEFAULT_MIN = 30
IN_FORCE_MAX_MIN = 24 * 60
TICK_ROWS = 500  # dispatches looked at per tick in each state
DUE_REASON = "emergency fallback"

WAITING_CLIP, SENT, ACKED, FALLBACK, CANCELLED = "waiting_clip", "sent", "acked", "fallback", "cancelled"


class EmergencyError(Exception):
    status = 422


@dataclass
class Started:
    broadcast: Broadcast
    entry_id: str
    # the calendar's review (conflicts listed, never blocking: an emergency wins them by level)
    review: Review = field(default_factory=lambda: Review([], [], {}, [], 0))
    states: dict[str, list[str]] = field(default_factory=dict)  # dispatch state → speakers


def entry_id_of(broadcast_id: int, start: datetime) -> str:
    return f"b{broadcast_id}.{int(start.timestamp())}"


async def mark_due(device_ids: list[str], now: datetime, conn: BaseDBAsyncClient | None = None) -> None:
    """Delivery recomputes these speakers' documents at its next turn (the emergency's entry in them)."""
    if not device_ids:
        return
    now = min(now, datetime.now(UTC))  # due at once, also for a tick given a later time (tests)
    made = SpeakerDelivery.bulk_create([SpeakerDelivery(device_id=d, due_at=now, reason=DUE_REASON)
                                        for d in device_ids], ignore_conflicts=True, using_db=conn)
    await made
    query = SpeakerDelivery.filter(device_id__in=device_ids)
    if conn is not None:
        query = query.using_db(conn)
    await query.update(due_at=now, reason=DUE_REASON)


class Emergencies:
    def __init__(self, worker: "BroadcastWorker", clip_sender: ClipSender) -> None:
        self.worker = worker
        self.link = worker.link
        self.settings = worker.settings
        self.clips = clip_sender
        self.tz = ZoneInfo(self.settings.timezone)

    # -- the button ----------------------------------------------------------------------------

    async def start(self, *, actor: str, title: str, clip_id: int, targets: Targets, confirm: bool,
                    in_force_min: int = IN_FORCE_DEFAULT_MIN, now: datetime | None = None) -> Started:
        if not confirm:
            raise EmergencyError("an emergency plays at once on every targeted speaker: send confirm=true "
                                 "to start it")
        if not 1 <= in_force_min <= IN_FORCE_MAX_MIN:
            raise EmergencyError(f"in_force_min: 1 to {IN_FORCE_MAX_MIN}")
        now = (now or datetime.now(UTC)).replace(microsecond=0)  # a broadcast starts on a second
        calendar = Calendar(self.tz, self.settings.broadcast_conflict_days)
        definition = Definition(title, clip_id, Level.EMERGENCY, targets, local_start(now, self.tz))
        sends: list[Send] = []
        commands: dict[int, tuple[str, str]] = {}  # send key → (command id, device id)
        wanted: list[int] = []
        try:
            # one transaction: delivery never sees the broadcast without its dispatch rows. The broadcast
            # is stored and versioned as Calendar.create does, without its conflict review: an emergency
            # wins its conflicts by level, so the review (one target resolution per broadcast that shares
            # a speaker) is made after the commands are out, for the answer only
            async with in_transaction():
                timing = timing_of(definition, self.tz)
                duration = await calendar.clip_duration(clip_id)
                speakers = sorted(await resolve(targets))
                if not speakers:
                    raise EmergencyError("no speaker is targeted: name wards, tags or speakers that have the "
                                         "speaker role")
                broadcast = await Broadcast.create(**calendar._fields(definition, timing, duration),
                                                   in_force_until=now + timedelta(minutes=in_force_min),
                                                   created_by=actor, updated_by=actor)
                await calendar._record(broadcast, actor)
                entry = entry_id_of(broadcast.id, now)
                started = Started(broadcast, entry)
                await self._dispatch(broadcast, entry, speakers, now, started, sends, commands, wanted)
        except CalendarError as err:
            raise EmergencyError(str(err)) from err
        # the commands and the clip fetches go out at once, concurrently
        if wanted:
            done, _ = await asyncio.gather(publish_all(self.link, sends), self.clips.send_due(now, first=wanted))
        else:
            done = await publish_all(self.link, sends)
        unsent = [commands[key] for key in commands if key not in done]
        if unsent:  # the broker link is down: their desired state carries it (sent when the link is back)
            moved = {device_id for _, device_id in unsent}
            await Command.filter(id__in=[command_id for command_id, _ in unsent]).update(status="unsent")
            await EmergencyDispatch.filter(broadcast_id=broadcast.id, device_id__in=sorted(moved),
                                           state=SENT).update(state=FALLBACK)
            await mark_due(sorted(moved), now)
            started.states[SENT] = [d for d in started.states.get(SENT, []) if d not in moved]
            started.states.setdefault(FALLBACK, []).extend(sorted(moved))
        self.worker.nudge()
        try:
            started.review = await calendar.review(definition, broadcast.id, now)
        except CalendarError as err:  # it was saved and sent: the review is only shown
            log.error("emergency %s: no conflict review (%s)", broadcast.id, err)
        return started

    async def _dispatch(self, broadcast: Broadcast, entry: str, speakers: list[str], now: datetime,
                        started: Started, sends: list[Send], commands: dict[int, tuple[str, str]],
                        wanted: list[int]) -> None:
        devices = {d.id: d for d in await Device.filter(id__in=speakers).only("id", "kind", "online", "status")}
        variants = {f.kind: f for f in await ClipFile.filter(clip_id=broadcast.clip_id)}  # type: ignore[attr-defined]
        names = {clip_name(f.sha256) for f in variants.values()}
        held = {(str(d), str(n)) for d, n in await SpeakerClip.filter(
            device_id__in=speakers, name__in=list(names), state=READY).values_list("device_id", "name")}
        rows: list[EmergencyDispatch] = []
        pending_commands: list[tuple[EmergencyDispatch, Command, str, bytes]] = []
        for device_id in speakers:
            device = devices.get(device_id)
            variant = variants.get(device.kind or "") if device is not None else None
            row = EmergencyDispatch(broadcast=broadcast, device_id=device_id, state=FALLBACK)
            if (device is None or device.status == DeviceStatus.DECOMMISSIONED or not device.online
                    or variant is None):
                rows.append(row)
                continue
            name = clip_name(variant.sha256)
            if (device_id, name) in held:
                try:
                    cmd, topic, payload = command(device_id, BROADCAST_COMMAND,
                                                  {"id": entry, "clip": name, "emergency": True}, now, COMMAND_TTL_S)
                except ContractError as err:
                    log.error("emergency %s: no command for %s: %s", broadcast.id, device_id, err)
                    rows.append(row)
                    continue
                row.state, row.command_id, row.sent_at = SENT, cmd.id, now
                row.expires_at = now + timedelta(seconds=COMMAND_TTL_S)
                pending_commands.append((row, cmd, topic, payload))
            else:
                row.state, row.expires_at = WAITING_CLIP, now + timedelta(seconds=CLIP_WAIT_S)
                clip_row = await clips.want(device_id, variant.sha256, variant.bytes, now)
                if clip_row.state == clips.WANTED:
                    wanted.append(clip_row.id)
            rows.append(row)
        await EmergencyDispatch.bulk_create(rows)
        if pending_commands:
            await Command.bulk_create([c for _, c, _, _ in pending_commands])
        await BroadcastReceipt.bulk_create(
            [BroadcastReceipt(broadcast=broadcast, device_id=d, entry_id=entry, occurrence_at=now,
                              version=broadcast.version, emergency=True) for d in speakers],
            ignore_conflicts=True)
        for key, (row, cmd, topic, payload) in enumerate(pending_commands):
            commands[key] = (cmd.id, row.device_id)
            sends.append(Send(key, topic, payload))
        for row in rows:
            started.states.setdefault(row.state, []).append(row.device_id)
        await mark_due(started.states.get(FALLBACK, []), now)

    # -- the worker's tick ---------------------------------------------------------------------

    async def tick(self, now: datetime) -> None:
        fell = await self._expired(now)
        fell += await self._waiting(now)
        if fell:
            self.worker.nudge()  # delivery puts the entry in their documents

    async def _expired(self, now: datetime) -> int:
        late = await EmergencyDispatch.filter(
            state=SENT, expires_at__lte=now - timedelta(seconds=ANSWER_MARGIN_S)).limit(TICK_ROWS)
        if not late:
            return 0
        ids = [r.id for r in late]
        await EmergencyDispatch.filter(id__in=ids, state=SENT).update(state=FALLBACK)
        await mark_due(sorted({r.device_id for r in late}), now)
        log.info("emergency: %d speaker(s) did not answer the command in time: their desired state carries it",
                 len(late))
        return len(late)

    async def _waiting(self, now: datetime) -> int:
        rows = await EmergencyDispatch.filter(state=WAITING_CLIP).prefetch_related("broadcast").limit(TICK_ROWS)
        if not rows:
            return 0
        devices = {d.id: d for d in await Device.filter(id__in=list({r.device_id for r in rows})).only(
            "id", "kind", "online", "status")}
        clip_ids = {r.broadcast.clip_id for r in rows}  # type: ignore[attr-defined]
        variants = {(int(c), str(k)): str(s) for c, k, s in await ClipFile.filter(
            clip_id__in=list(clip_ids)).values_list("clip_id", "kind", "sha256")}
        names = {clip_name(s) for s in variants.values()}
        states = {(str(d), str(n)): str(s) for d, n, s in await SpeakerClip.filter(
            device_id__in=list(devices), name__in=list(names)).values_list("device_id", "name", "state")}
        fallback: list[EmergencyDispatch] = []
        cancelled: list[int] = []
        sends: list[Send] = []
        commands: list[Command] = []
        for row in rows:
            broadcast: Broadcast = row.broadcast
            if broadcast.status != BroadcastStatus.ACTIVE:
                cancelled.append(row.id)
                continue
            device = devices.get(row.device_id)
            sha = variants.get((broadcast.clip_id, (device.kind or "") if device else ""))  # type: ignore[attr-defined]
            if device is None or not device.online or sha is None:
                fallback.append(row)
                continue
            name = clip_name(sha)
            state = states.get((row.device_id, name))
            if state == READY and (broadcast.in_force_until is None or broadcast.in_force_until > now):
                entry = entry_id_of(broadcast.id, datetime.fromisoformat(broadcast.start_local).replace(
                    tzinfo=ZoneInfo(broadcast.timezone)))
                try:
                    cmd, topic, payload = command(row.device_id, BROADCAST_COMMAND,
                                                  {"id": entry, "clip": name, "emergency": True}, now, COMMAND_TTL_S)
                except ContractError as err:
                    log.error("emergency %s: no command for %s: %s", broadcast.id, row.device_id, err)
                    fallback.append(row)
                    continue
                claimed = await EmergencyDispatch.filter(id=row.id, state=WAITING_CLIP).update(
                    state=SENT, command_id=cmd.id, sent_at=now, expires_at=now + timedelta(seconds=COMMAND_TTL_S))
                if claimed:
                    commands.append(cmd)
                    sends.append(Send(row.id, topic, payload))
            elif state in (None, clips.FAILED) or row.expires_at is None or row.expires_at <= now:
                fallback.append(row)
        if cancelled:
            await EmergencyDispatch.filter(id__in=cancelled, state=WAITING_CLIP).update(state=CANCELLED)
        if sends:
            await Command.bulk_create(commands)
            done = await publish_all(self.link, sends)
            lost = [s.key for s in sends if s.key not in done]
            if lost:
                await Command.filter(id__in=[c.id for c, s in zip(commands, sends, strict=True)
                                             if s.key not in done]).update(status="unsent")
                await EmergencyDispatch.filter(id__in=lost, state=SENT).update(state=FALLBACK)
                fallback += [r for r in rows if r.id in lost]
        if fallback:
            ids = [r.id for r in fallback]
            await EmergencyDispatch.filter(id__in=ids, state=WAITING_CLIP).update(state=FALLBACK)
            await mark_due(sorted({r.device_id for r in fallback}), now)
        return len(fallback)

    # -- stopping ------------------------------------------------------------------------------

    async def stop(self, broadcast: Broadcast, now: datetime | None = None) -> list[str]:
        """After a cancel: dispatches still waiting for their clip are `cancelled`; the Pi speakers
        that were sent the command and may still be playing it get `speaker.stop` (the ESP32 has no
        stop command: it plays the clip to its end). The speakers sent a stop."""
        now = now or datetime.now(UTC)
        await EmergencyDispatch.filter(broadcast_id=broadcast.id, state=WAITING_CLIP).update(state=CANCELLED)
        clip = await ClipFile.filter(clip_id=broadcast.clip_id).first()  # type: ignore[attr-defined]
        playing_for = timedelta(milliseconds=clip.duration_ms if clip else 0, seconds=COMMAND_TTL_S)
        rows = await EmergencyDispatch.filter(broadcast_id=broadcast.id, state__in=[SENT, ACKED],
                                              sent_at__gt=now - playing_for)
        if not rows:
            return []
        pis = {str(r[0]) for r in await Device.filter(id__in=[r.device_id for r in rows], kind="pi",
                                                      online=True).values_list("id")}
        commands: list[Command] = []
        sends: list[Send] = []
        for i, row in enumerate(r for r in rows if r.device_id in pis):
            try:
                cmd, topic, payload = command(row.device_id, STOP_COMMAND, {}, now, COMMAND_TTL_S)
            except ContractError as err:
                log.error("emergency %s: no stop for %s: %s", broadcast.id, row.device_id, err)
                continue
            commands.append(cmd)
            sends.append(Send(i, topic, payload))
        if not sends:
            return []
        await Command.bulk_create(commands)
        done = await publish_all(self.link, sends)
        return sorted(c.device_id for c, s in zip(commands, sends, strict=True) if s.key in done)


# -- answers, from the ingest ------------------------------------------------------------------------


async def observe(conn: BaseDBAsyncClient, batch: list[Upstream] | Any, now: datetime) -> None:
    """Clip fetch answers (clips.observe) and the emergency commands' answers: ok → `acked` (the
    receipt `delivered`), any other → `fallback` (the speaker's delivery due)."""
    ready = await clips.observe(conn, batch, now)
    answers = {str(m.body.get("id")): m for m in batch if m.kind == "cmd_result"}
    fell = False
    if answers:
        try:
            rows = await EmergencyDispatch.filter(command_id__in=list(answers), state=SENT).using_db(conn)
            for row in rows:
                msg = answers[str(row.command_id)]
                if msg.device_id != row.device_id:
                    continue
                if msg.body.get("status") == "ok":
                    await EmergencyDispatch.filter(id=row.id, state=SENT).using_db(conn).update(
                        state=ACKED, acked_at=now)
                    entry = await BroadcastReceipt.filter(broadcast_id=row.broadcast_id,  # type: ignore[attr-defined]
                                                          device_id=row.device_id).using_db(conn).values_list(
                        "entry_id", flat=True)
                    await advance(row.device_id, [str(e) for e in entry], ReceiptState.DELIVERED, conn=conn,
                                  delivered_at=now)
                else:
                    log.info("emergency command to %s answered %s: its desired state carries it", row.device_id,
                             msg.body.get("status"))
                    await EmergencyDispatch.filter(id=row.id, state=SENT).using_db(conn).update(state=FALLBACK)
                    await mark_due([row.device_id], now, conn)
                    fell = True
        except Exception as err:  # the batch goes on: the tick's expiry falls back what is left
            log.error("emergency answers not applied (%s: %.200s)", type(err).__name__, err)
    if ready or fell:
        nudge_all()


# -- the worker and the callers ----------------------------------------------------------------------

_registered: "weakref.WeakKeyDictionary[BroadcastWorker, Emergencies]" = weakref.WeakKeyDictionary()
_loops: "weakref.WeakKeyDictionary[BroadcastWorker, asyncio.AbstractEventLoop]" = weakref.WeakKeyDictionary()


def register(worker: "BroadcastWorker") -> Emergencies:
    """The clip fetches and the emergencies on the broadcasts worker (fleet/app.py calls it once)."""
    sender = ClipSender(worker.link, worker.settings)
    emergencies = Emergencies(worker, sender)
    worker.parts.append(("clips", sender.tick))
    worker.parts.append(("emergency", emergencies.tick))
    _registered[worker] = emergencies
    _loops[worker] = asyncio.get_running_loop()
    return emergencies


def emergencies_of(runtime: "Runtime") -> Emergencies:
    worker = runtime.broadcasts
    found = _registered.get(worker) if worker is not None else None
    if found is None:
        raise EmergencyError("the broadcasts worker is not running in this process")
    return found


def nudge_all() -> None:
    """Run the workers of this event loop at once (an answer the emergency path waits on is in)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for worker, owner in list(_loops.items()):
        if owner is loop:
            worker.nudge()


async def start_emergency(runtime: "Runtime", *, actor: str, title: str, clip_id: int, targets: Targets,
                          confirm: bool, in_force_min: int = IN_FORCE_DEFAULT_MIN,
                          now: datetime | None = None) -> Started:
    """The emergency button: EmergencyError (422) for no confirm, no speaker, no such clip, a bad
    duration; else the broadcast, its entry id, the calendar's review and the speakers per state."""
    return await emergencies_of(runtime).start(actor=actor, title=title, clip_id=clip_id, targets=targets,
                                               confirm=confirm, in_force_min=in_force_min, now=now)


async def stop_emergency(runtime: "Runtime", broadcast: Broadcast, now: datetime | None = None) -> list[str]:
    """After an emergency's cancel: `speaker.stop` to the Pi speakers that may still play it. The
    cancel is saved already: a failure here is logged, not raised."""
    try:
        return await emergencies_of(runtime).stop(broadcast, now)
    except Exception as err:
        log.error("emergency %s: stop after cancel failed (%s: %.200s)", broadcast.id, type(err).__name__, err)
        return []
