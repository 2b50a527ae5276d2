"""The live feed (docs/relay.md, "Live feed"): stored device events as they arrive, for the video
wall and anyone else who reads with `GET /api/relay/feed`.

One poller per fleet process (`FeedHub`) reads the event rows written since its last read, every
FLEET_FEED_POLL_S, builds each one's message once (fleet/relay/outbox.py `event_payload`, the relay's own
builder) and offers it to every connected client whose filter it passes, in id order.

Ids and commits: on PostgreSQL several ingesting instances (docs/fleet.md, "Several instances")
take ids from the sequence when they insert and commit in any order, so a lower id can become
visible after a higher one; a rolled-back insert, or a duplicate dropped by ON CONFLICT DO
NOTHING, leaves an id that never appears. So the poller offers rows in id order only up to the
first missing id (a "hole") below the highest it has read, and waits for that hole to fill for
FLEET_FEED_HOLE_WAIT_S from when it first read an id above it; then it gives the hole up and goes
on (an event committed even later than that is not sent live; a resume from an older id still
finds it in the database). `cursor` is the id below which everything was offered or given up, so
"id > cursor" is what a joining client and a resume are told. SQLite has one writer, whose
transactions commit in id order: there a hole is given up at once (only deleted rows leave one).

Bounds and what happens at them:
- one read: at most READ_MAX rows; a full read is followed at once by the next;
- a client's queue: FLEET_FEED_QUEUE_MAX events; when it is full the client is sent `overflow`
  and closed (its queue dropped): it resumes with Last-Event-ID;
- clients: FLEET_FEED_MAX_CLIENTS at once (the route answers 503 beyond);
- a resume: at most FLEET_FEED_REPLAY_MAX missed events from the database, the newest ones,
  after a `gap` event saying how many older ones were skipped;
- holes: one (highest id read, when) mark per read that read a higher id, dropped once the cursor
  passes it, at most MARKS_MAX (the oldest dropped beyond: its holes then wait from a later mark).
The poller runs only while a client is connected.
"""

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tortoise.expressions import Subquery
from tortoise.functions import Max

from fleet.models import Device, EventRecord
from fleet.relay.models import Snapshot
from fleet.relay.outbox import event_payload
from fleet.relay.routing import Rule, Subject, matches, tags_of
from fleet.settings import Settings
from fleet.tasks import stop_tasks

log = logging.getLogger(__name__)

READ_MAX = 500  # event rows per read of the poller
MARKS_MAX = 4096  # (highest id read, when) marks the poller keeps to time holes
SNAPSHOT_PATH = "/api/snapshots/{sha256}"  # served to people with the snapshots permission


def passes(rule: Rule, data: Mapping[str, Any]) -> bool:
    """Whether the `data` object of a relayed message passes a filter (a route's rule: the same
    conditions, fleet/relay/routing.py)."""
    device, event = data["device"], data["event"]
    return matches(rule, Subject(type=event["type"], phase=event["phase"], category=event["category"],
                                 severity=event["severity"], device=device["id"], ward=device["ward"],
                                 kind=device["kind"] or "", tags=tags_of(device["tags"])))


def table_conditions(rule: Rule) -> dict[str, Any]:
    """The conditions SQL checks: all but the device's tags and the severity (checked in Python)."""
    where: dict[str, Any] = {}
    for name, values in (("type", rule.types), ("phase", rule.phases), ("category", rule.categories),
                         ("device_id", rule.devices)):
        if values:
            where[f"{name}__in"] = sorted(values)
    if rule.wards or rule.device_kinds:
        devices = Device.all()
        if rule.wards:
            devices = devices.filter(ward__in=sorted(rule.wards))
        if rule.device_kinds:
            devices = devices.filter(kind__in=sorted(rule.device_kinds))
        where["device_id__in"] = Subquery(devices.values("id"))
        if rule.devices:
            where["device_id__in"] = Subquery(devices.filter(id__in=sorted(rule.devices)).values("id"))
    return where


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One stored event as the feed sends it: its row id, its `data` object and that object as
    JSON, with the snapshot's `url` (for people who may see snapshots) and without."""

    id: int
    data: dict[str, Any]
    json_with_url: str
    json_without_url: str

    def json(self, with_url: bool) -> str:
        return self.json_with_url if with_url else self.json_without_url


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def items_of(rows: list[EventRecord]) -> list[FeedItem]:
    """The rows as feed items: their devices and which snapshots the fleet holds, read once."""
    if not rows:
        return []
    devices = {d.id: d for d in await Device.filter(id__in=list({r.device_id for r in rows}))}
    hashes = list({r.snapshot["sha256"] for r in rows
                   if isinstance(r.snapshot, dict) and isinstance(r.snapshot.get("sha256"), str)})
    held = set(await Snapshot.filter(sha256__in=hashes).values_list("sha256", flat=True)) if hashes else set()
    items = []
    for row in rows:
        # a device row always exists for its events (the ingest stores it first; devices are never
        # deleted): the stand-in only keeps one odd row from stopping the feed
        device = devices.get(row.device_id) or Device(id=row.device_id)
        data = event_payload(row, device, row.received_at)["data"]
        snapshot = data["snapshot"]
        if snapshot is None:
            with_url = without_url = data
        else:
            sha256 = snapshot["sha256"]
            shown = {**snapshot, "available": sha256 in held}
            with_url = {**data, "snapshot": {**shown, "url": SNAPSHOT_PATH.format(sha256=sha256)}}
            without_url = {**data, "snapshot": {**shown, "url": None}}
        items.append(FeedItem(row.id, with_url, _dumps(with_url), _dumps(without_url)))
    return items


async def newest_id() -> int:
    rows = await EventRecord.annotate(top=Max("id")).values("top")
    return int(rows[0]["top"] or 0) if rows else 0


async def replay(rule: Rule, after: int, upto: int, limit: int) -> tuple[int, list[FeedItem]]:
    """The events with `after` < id <= `upto` that pass the filter, at most the newest `limit` of
    them, oldest first; and how many older ones were left out. Tags and severity are checked on
    the `limit` rows read, so the count left out is of the events that pass the other conditions."""
    query = EventRecord.filter(id__gt=after, id__lte=upto, **table_conditions(rule))
    rows = list(reversed(await query.order_by("-id").limit(limit)))
    skipped = await query.count() - len(rows) if len(rows) == limit else 0
    return skipped, [item for item in await items_of(rows) if passes(rule, item.data)]


async def recent(rule: Rule, upto: int, limit: int) -> list[FeedItem]:
    """The newest `limit` events with id <= `upto` that pass the filter's SQL conditions, oldest
    first, then those of them that pass its tags and severity."""
    rows = await EventRecord.filter(id__lte=upto, **table_conditions(rule)).order_by("-id").limit(limit)
    return [item for item in await items_of(list(reversed(rows))) if passes(rule, item.data)]


@dataclass(eq=False)
class FeedClient:
    """One connected stream: its filter, whether it may see snapshot URLs, and its bounded queue."""

    rule: Rule
    with_url: bool
    limit: int
    pending: deque[FeedItem] = field(default_factory=deque)
    overflowed: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, item: FeedItem) -> bool:
        """Queue `item` if it passes; False once the queue overflowed (the client must go)."""
        if self.overflowed:
            return False
        if not passes(self.rule, item.data):
            return True
        if len(self.pending) >= self.limit:
            self.overflowed = True
            self.pending.clear()
            self.ready.set()
            return False
        self.pending.append(item)
        self.ready.set()
        return True

    async def next(self) -> list[FeedItem] | None:
        """The queued items (waiting for at least one), or None after an overflow."""
        while not self.pending and not self.overflowed:
            self.ready.clear()
            await self.ready.wait()
        if self.overflowed:
            return None
        items = list(self.pending)
        self.pending.clear()
        return items


class FeedHub:
    """The one poller of this process and the clients it feeds."""

    def __init__(self, settings: Settings) -> None:
        self.poll_s = settings.feed_poll_s
        self.max_clients = settings.feed_max_clients
        self.queue_max = settings.feed_queue_max
        self.replay_max = settings.feed_replay_max
        # one writer on SQLite: ids commit in order, a hole is never filled later
        self.hole_wait_s = 0.0 if settings.sqlite_path() is not None else settings.feed_hole_wait_s
        self.cursor = 0  # every event id up to this one was offered or given up
        self.waiting: int | None = None  # the first missing id the poller waits for, if any
        self._marks: deque[tuple[int, float]] = deque()  # (highest id read, first read at), rising
        self.clients: set[FeedClient] = set()
        self.reserved = 0  # streams admitted (connected, or about to be)
        self._start = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def polling(self) -> bool:
        return self._task is not None

    def admit(self) -> bool:
        """Take a place for one more stream; False when FLEET_FEED_MAX_CLIENTS are taken."""
        if self.reserved >= self.max_clients:
            return False
        self.reserved += 1
        return True

    def release(self) -> None:
        self.reserved = max(0, self.reserved - 1)

    def client(self, rule: Rule, with_url: bool) -> FeedClient:
        return FeedClient(rule, with_url, self.queue_max)

    async def join(self, client: FeedClient) -> int:
        """Start feeding `client`: every event with an id above the returned one will be offered
        to it (the poller starts if it was not running)."""
        async with self._start:
            if self._task is None:
                self.cursor = await newest_id()
                self.waiting = None
                self._marks.clear()
                self._task = asyncio.create_task(self._run(), name="fleet-relay-feed")
            self.clients.add(client)
            return self.cursor

    def leave(self, client: FeedClient) -> None:
        self.clients.discard(client)

    async def _run(self) -> None:
        failing = False
        try:
            while self.clients:
                try:
                    full = await self._turn()
                    failing = False
                except asyncio.CancelledError:
                    raise
                except Exception:  # the database away for a moment: the next turn tries again
                    if not failing:  # once per run of failures, not every turn
                        log.warning("live feed: reading new events failed", exc_info=True)
                    failing, full = True, False
                if not full:
                    await asyncio.sleep(self.poll_s)
        finally:
            self._task = None

    async def _turn(self) -> bool:
        """Offer the events stored since the last turn, in id order up to the first hole still
        waited for; True if the read was full and all of it offered (more wait)."""
        rows = await EventRecord.filter(id__gt=self.cursor).order_by("id").limit(READ_MAX)
        now = time.monotonic()
        if rows and (not self._marks or rows[-1].id > self._marks[-1][0]):
            self._marks.append((rows[-1].id, now))
            if len(self._marks) > MARKS_MAX:
                self._marks.popleft()
        ready: list[EventRecord] = []
        cursor, waiting = self.cursor, None
        for row in rows:
            if row.id > cursor + 1 and not self._given_up(row.id - 1, now):
                waiting = cursor + 1
                break
            ready.append(row)
            cursor = row.id
        items = await items_of(ready)
        # from here to the cursor's move nothing awaits: a client joining meanwhile has either
        # the old cursor and these items, or the new cursor
        for client in list(self.clients):
            for item in items:
                if not client.offer(item):
                    self.clients.discard(client)
                    break
        self.cursor, self.waiting = cursor, waiting
        while self._marks and self._marks[0][0] <= cursor:
            self._marks.popleft()
        return len(rows) == READ_MAX and waiting is None

    def _given_up(self, last: int, now: float) -> bool:
        """Whether the missing ids up to `last` (those above the cursor) have been waited for
        long enough: since the first read that read an id above `last`."""
        for top, at in self._marks:
            if top > last:
                return now - at >= self.hole_wait_s
        return self.hole_wait_s <= 0

    async def close(self) -> None:
        self.clients.clear()
        await stop_tasks([self._task])

