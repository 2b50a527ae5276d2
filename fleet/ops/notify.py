"""Notifications (docs/ops.md, "Notifications"): alert changes to webhooks and e-mail.

Each tick: (1) route: pending AlertEvents (oldest first, at most `route_batch`) go to the channels
their rule names, if the channel is enabled and the alert at least as severe as its `min_severity`;
the outbox rows are written and the events marked done in one transaction. Per channel and tick,
up to `digest_after` events that fit in the channel's hourly rate go one message each; more, or
more than the rate allows, go as ONE digest; with no room left in the hour they are held (one held
digest per channel, which later events join) until the hour allows. (2) release held digests whose
channel has room again. (3) send due outbox rows, retrying a failure after a doubling delay up to
`attempts_max` attempts.

Several fleet instances may run it: events and due messages are claimed with row locks (SKIP
LOCKED on PostgreSQL) and a claimed message is leased for LEASE before another may take it.
"""

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from fleet.ops import messages, transports
from fleet.ops.messages import EventView
from fleet.ops.models import SEVERITY_RANK, Alert, AlertEvent, AlertRule, Notification, NotificationChannel, Severity
from fleet.settings import Settings

log = logging.getLogger(__name__)

ROUTE_BATCH = 1000  # pending events routed per tick, oldest first; the rest wait for the next tick
DIGEST_AFTER = 5  # more events than this to one channel in one tick: one digest
DIGEST_EVENTS_MAX = 1000  # events in one message; a held digest this full starts another
SEND_BATCH = 32  # messages sent per tick, the oldest due first; the rest wait for the next tick
SEND_AT_ONCE = 4  # channels sent to at once (one channel's messages go in order)
ATTEMPTS_MAX = 8  # then the message is `failed` (kept with its last_error)
BACKOFF_FIRST = timedelta(seconds=30)  # after the first failure; doubling, at most BACKOFF_MAX
BACKOFF_MAX = timedelta(hours=1)
LEASE = timedelta(minutes=5)  # a message being sent is not taken by another instance for this long
WINDOW = timedelta(hours=1)  # the rate limit's rolling window

PENDING, HELD, SENT, FAILED = "pending", "held", "sent", "failed"
COUNTED = (PENDING, SENT, FAILED)  # messages that used a channel's hourly rate (held ones wait for room)


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 30 s, 1 min, 2 min, ... at most an hour."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * (1 << min(max(0, attempts - 1), 20)))


async def used_in_window(channel_id: int, now: datetime, conn: BaseDBAsyncClient | None = None) -> int:
    """Messages the channel made in the last hour (held digests are not counted until released)."""
    query = Notification.filter(channel_id=channel_id, state__in=COUNTED, created_at__gt=now - WINDOW)
    return await (query.using_db(conn) if conn else query).count()


async def views(event_ids: list[int]) -> list[EventView]:
    """The events as messages tell them, with their alert and rule as they are now."""
    events = await AlertEvent.filter(id__in=event_ids).order_by("id").select_related("alert", "alert__rule")
    return [EventView(event_id=e.id, action=e.action, at=e.at, alert_id=e.alert.id, rule=e.alert.rule.name,
                      kind=e.alert.kind, device_id=e.alert.device_id, device_kind=e.alert.device_kind,
                      ward=e.alert.ward, severity=str(e.alert.severity.value), state=str(e.alert.state.value),
                      summary=e.alert.summary, value=e.alert.value) for e in events]


async def deliver(channel: NotificationChannel, smtp: transports.Smtp, message_id: str,
                  events: list[EventView] | None, *, digest: bool, now: datetime) -> str:
    """Send one message to the channel (events None: a test message). SendError on failure."""
    to = [str(a) for a in channel.target.get("to", [])] if isinstance(channel.target, dict) else []
    if channel.kind == "webhook":
        url = str(channel.target.get("url", ""))
        if not channel.secret:
            raise transports.SendError("the channel has no signing secret")
        document = (messages.probe_payload(channel.name, now) if events is None
                    else messages.payload(events, digest=digest, sent_at=now))
        return await transports.post_webhook(url, channel.secret, message_id, document)
    if channel.kind == "email":
        mail = (messages.probe_email(channel.name, sender=smtp.sender, to=to, at=now) if events is None
                else messages.email(events, digest=digest, sender=smtp.sender, to=to, at=now))
        return await transports.send_email(smtp, mail)
    raise transports.SendError(f"unknown channel kind {channel.kind[:16]!r}")


class Notifier:
    def __init__(self, settings: Settings, *, route_batch: int = ROUTE_BATCH, digest_after: int = DIGEST_AFTER,
                 send_batch: int = SEND_BATCH, attempts_max: int = ATTEMPTS_MAX) -> None:
        if route_batch > DIGEST_EVENTS_MAX:
            raise ValueError("one tick's events to a channel must fit in one digest")
        self.smtp = transports.Smtp.of(settings)
        self.route_batch = route_batch
        self.digest_after = digest_after
        self.send_batch = send_batch
        self.attempts_max = attempts_max
        self._unknown: set[str] = set()  # channel names rules send to that do not exist (warned once)

    async def tick(self, now: datetime) -> None:
        await self.route(now)
        await self.release(now)
        await self.send(now)

    # -- routing --------------------------------------------------------------------------------

    async def route(self, now: datetime) -> int:
        """Route one batch of pending events; returns how many were taken."""
        async with in_transaction() as conn:
            events = await (AlertEvent.filter(notify="pending").order_by("id").limit(self.route_batch)
                            .select_for_update(skip_locked=True).using_db(conn))
            if not events:
                return 0
            alerts = {a.id: a for a in await Alert.filter(id__in={e.alert_id for e in events})  # type: ignore[attr-defined]
                      .using_db(conn)}
            rules = {r.id: r for r in await AlertRule.filter(id__in={a.rule_id for a in alerts.values()})  # type: ignore[attr-defined]
                     .using_db(conn)}
            names = {n for r in rules.values() for n in (r.channels or []) if isinstance(n, str)}
            channels = {c.name: c for c in await NotificationChannel.filter(name__in=names).order_by("id")
                        .select_for_update().using_db(conn)}
            for name in names - channels.keys() - self._unknown:
                self._unknown.add(name)
                log.warning("notify: a rule sends to channel %r, which does not exist", name[:64])
            routed: dict[str, list[int]] = {}
            for event in events:
                alert = alerts.get(event.alert_id)  # type: ignore[attr-defined]
                rule = rules.get(alert.rule_id) if alert else None  # type: ignore[attr-defined]
                if alert is None or rule is None:
                    continue
                for name in dict.fromkeys(n for n in (rule.channels or []) if isinstance(n, str)):
                    channel = channels.get(name)
                    if channel is not None and channel.enabled and _severe_enough(alert.severity, channel):
                        routed.setdefault(name, []).append(event.id)
            for name, event_ids in routed.items():
                await self._queue(channels[name], event_ids, now, conn)
            await AlertEvent.filter(id__in=[e.id for e in events]).using_db(conn).update(notify="done")
        return len(events)

    async def _queue(self, channel: NotificationChannel, event_ids: list[int], now: datetime,
                     conn: BaseDBAsyncClient) -> None:
        held = await Notification.filter(channel_id=channel.id, state=HELD).order_by("-id").using_db(conn).first()
        if held is not None:  # a digest already waits for the hour: these join it (in order, nothing overtakes)
            room = DIGEST_EVENTS_MAX - len(held.event_ids)
            if room > 0:
                held.event_ids = [*held.event_ids, *event_ids[:room]]
                await held.save(using_db=conn, update_fields=["event_ids"])
            if event_ids[room:]:
                await self._hold(channel, event_ids[max(room, 0):], now, conn)
            return
        room = channel.rate_per_hour - await used_in_window(channel.id, now, conn)
        if len(event_ids) <= self.digest_after and len(event_ids) <= room:
            await Notification.bulk_create([Notification(channel_id=channel.id, event_ids=[i], digest=False,
                                                         state=PENDING, next_try_at=now, created_at=now)
                                            for i in event_ids], using_db=conn)
        elif room >= 1:
            await Notification.create(channel_id=channel.id, event_ids=event_ids, digest=True, state=PENDING,
                                      next_try_at=now, created_at=now, using_db=conn)
        else:
            await self._hold(channel, event_ids, now, conn)

    async def _hold(self, channel: NotificationChannel, event_ids: list[int], now: datetime,
                    conn: BaseDBAsyncClient) -> None:
        oldest = await (Notification.filter(channel_id=channel.id, state__in=COUNTED, created_at__gt=now - WINDOW)
                        .order_by("created_at").using_db(conn).first())
        room_at = oldest.created_at + WINDOW if oldest is not None else now
        await Notification.create(channel_id=channel.id, event_ids=event_ids, digest=True, state=HELD,
                                  next_try_at=room_at, created_at=now, using_db=conn)

    async def release(self, now: datetime) -> int:
        """Held digests become messages as their channel's hour has room (oldest first)."""
        released = 0
        channel_ids = await Notification.filter(state=HELD).distinct().values_list("channel_id", flat=True)
        for channel_id in channel_ids:
            async with in_transaction() as conn:
                channel = await NotificationChannel.filter(id=channel_id).select_for_update().using_db(conn).first()
                if channel is None:
                    continue
                room = channel.rate_per_hour - await used_in_window(channel.id, now, conn)
                if room < 1:
                    continue
                held = await Notification.filter(channel_id=channel_id, state=HELD).order_by("id").limit(room) \
                    .using_db(conn)
                for row in held:  # created_at: when it became a message (it counts in the hour from then)
                    row.state, row.next_try_at, row.created_at = PENDING, now, now
                    await row.save(using_db=conn, update_fields=["state", "next_try_at", "created_at"])
                released += len(held)
        return released

    # -- sending --------------------------------------------------------------------------------

    async def send(self, now: datetime) -> int:
        """Send the due outbox rows (at most `send_batch`); returns how many were tried."""
        async with in_transaction() as conn:
            due = await (Notification.filter(state=PENDING, next_try_at__lte=now).order_by("next_try_at", "id")
                         .limit(self.send_batch).select_for_update(skip_locked=True).using_db(conn))
            if due:
                await Notification.filter(id__in=[n.id for n in due]).using_db(conn).update(next_try_at=now + LEASE)
        if not due:
            return 0
        channels = {c.id: c for c in await NotificationChannel.filter(
            id__in={n.channel_id for n in due})}  # type: ignore[attr-defined]
        queues: dict[int, list[Notification]] = {}
        for row in due:
            queues.setdefault(row.channel_id, []).append(row)  # type: ignore[attr-defined]
        gate = asyncio.Semaphore(SEND_AT_ONCE)

        async def channel_queue(channel_id: int, rows: list[Notification]) -> None:
            """A channel's messages in order; after a failure the rest wait for the next tick (a dead
            receiver costs one timeout a tick, not one a message)."""
            async with gate:
                for number, row in enumerate(rows):
                    if not await self._send_one(row, channels.get(channel_id), now):
                        rest = [r.id for r in rows[number + 1:]]
                        if rest:
                            await Notification.filter(id__in=rest).update(next_try_at=now)
                        return

        await asyncio.gather(*(channel_queue(channel_id, rows) for channel_id, rows in queues.items()))
        return len(due)

    async def _send_one(self, row: Notification, channel: NotificationChannel | None, now: datetime) -> bool:
        """One attempt; False when the receiver failed it (the channel's next messages then wait)."""
        update: dict[str, Any] = {"attempts": row.attempts + 1}
        reached = False
        try:
            if channel is None:
                return True  # deleted meanwhile: its rows went with it
            if not channel.enabled:
                raise transports.SendError("the channel was disabled before this message was sent")
            events = await views(list(row.event_ids))
            if not events:
                raise transports.SendError("its alert events were deleted before it was sent")
            reached = True
            await deliver(channel, self.smtp, f"ntf_{row.id}", events, digest=row.digest, now=now)
            update |= {"state": SENT, "sent_at": now, "last_error": None}
        except Exception as err:
            if isinstance(err, transports.SendError):
                error = str(err)[:transports.ERROR_MAX]
            else:  # a bug or the database: retried like a failure, logged with its type
                error = f"internal error ({type(err).__name__})"
                log.error("notify: message %d: %s: %.200s", row.id, type(err).__name__, err)
            final = update["attempts"] >= self.attempts_max or (channel is not None and not channel.enabled)
            update |= {"last_error": error, "state": FAILED if final else PENDING,
                       "next_try_at": None if final else now + backoff(update["attempts"])}
            log.warning("notify: message %d to channel %r failed (attempt %d%s): %s", row.id,
                        channel.name if channel else "?", update["attempts"], ", giving up" if final else "", error)
        if channel is not None:
            await Notification.filter(id=row.id).update(**update)
        return update.get("state") == SENT or not reached


def _severe_enough(severity: Severity | str, channel: NotificationChannel) -> bool:
    return SEVERITY_RANK[Severity(severity)] <= SEVERITY_RANK[Severity(channel.min_severity)]
