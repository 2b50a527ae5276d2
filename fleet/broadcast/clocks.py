"""Speakers' clock offsets (docs/broadcasts.md, "Clock offsets").

For a message stamped `ts` (the node's clock) that arrives at `now` (the fleet's), `ts − now` is
the node's offset minus the network's delay, so the largest of a speaker's last SAMPLES_KEPT
values estimates its offset from below (the message that waited least). Two halves:
- `observe` (the ingest, inside the batch's transaction): samples into DeviceClock, one read and
  at most one write per batch for all its speakers; the answer to a `set_time` (`skew_ms`);
- `ClockKeeper.tick` (the broadcasts worker, every KEEP_EVERY): flags a speaker whose offset is above
  FLEET_CLOCK_OFFSET_MAX_MS, clears the flag when it is back within, and sends `set_time` to a
  flagged online ESP32 at most once per SET_TIME_EVERY.

A speaker is tracked from its first birth with the `speaker` role (the row is made then); other
devices cost the ingest one indexed read per batch that finds nothing.
"""

import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q, Subquery

from contract import ContractError, Upstream, make_command
from fleet.broadcast.models import DeviceClock
from fleet.ingest.bulk import load_by_pk
from fleet.ingest.clock import SET_TIME_TTL_MS
from fleet.ingest.link import LinkError, MqttLink
from fleet.models import Command, Device
from fleet.settings import Settings

log = logging.getLogger(__name__)

SAMPLES_KEPT = 20  # the last `ts − arrival` values kept per speaker
MIN_SAMPLES = 3  # no estimate (and so no flag) from fewer: one message held up in a queue is not a clock
SET_TIME_EVERY = timedelta(minutes=10)  # at most one set_time per speaker in this time
SET_TIME_PER_TICK = 50  # set_time commands sent per tick at most; the rest at the next ticks
KEEP_EVERY = timedelta(seconds=10)  # the flags and set_time: this often (a few statements over the clock table)
SPEAKER_ROLE = "speaker"
CHANGED_FIELDS = ["samples", "offset_ms", "set_time_skew_ms", "updated_at"]


def unix_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def estimate(samples: Sequence[int]) -> int | None:
    """The offset estimate: the largest sample, once there are MIN_SAMPLES."""
    return max(samples) if len(samples) >= MIN_SAMPLES else None


def corrected_ms(device_ms: int, offset_ms: int | None) -> int:
    """A time the node stamped, on the fleet's clock."""
    return device_ms - offset_ms if offset_ms is not None else device_ms


def _skew(msg: Upstream) -> int | None:
    detail = msg.body.get("detail")
    if msg.kind != "cmd_result" or msg.body.get("status") != "ok" or not isinstance(detail, dict):
        return None
    skew = detail.get("skew_ms")
    return skew if isinstance(skew, int) and not isinstance(skew, bool) else None


async def observe(conn: BaseDBAsyncClient, batch: Sequence[Upstream], now: datetime) -> dict[str, int | None]:
    """Take the batch's samples; returns each tracked speaker's offset estimate after the batch."""
    try:
        return await _observe(conn, batch, now)
    except Exception as err:  # never lose the ingest's batch to a clock
        log.error("clocks: batch of %d not sampled (%s: %.200s)", len(batch), type(err).__name__, err)
        return {}


async def _observe(conn: BaseDBAsyncClient, batch: Sequence[Upstream], now: datetime) -> dict[str, int | None]:
    # a retained birth the broker replays carries its old `ts`: not a sample
    live = [m for m in batch if not m.retained]
    ids = {m.device_id for m in live if m.ts is not None or _skew(m) is not None}
    if not ids:
        return {}
    # every device of a telemetry batch, mostly not speakers: no query builder for a thousand ids
    rows = {r.device_id: r for r in await load_by_pk(conn, DeviceClock, sorted(ids))}
    born = {m.device_id for m in live if m.kind == "birth" and SPEAKER_ROLE in m.body.get("roles", ())}
    new = [DeviceClock(device_id=d, samples=[]) for d in sorted(born - rows.keys())]
    if new:
        await DeviceClock.bulk_create(new, using_db=conn, ignore_conflicts=True)
        rows.update({r.device_id: r for r in new})
    # a skew_ms is a set_time's answer only if the command was one (the detail is the node's to fill)
    answers = {m.body["id"] for m in live if m.device_id in rows and _skew(m) is not None}
    set_times = set(await Command.filter(id__in=sorted(answers), name="set_time").using_db(conn)
                    .values_list("id", flat=True)) if answers else set()
    arrival = unix_ms(now)
    changed: dict[str, DeviceClock] = {}
    for msg in live:
        row = rows.get(msg.device_id)
        if row is None:
            continue
        samples = list(row.samples) if isinstance(row.samples, list) else []
        if msg.kind == "birth":
            samples = []  # a reboot: the node's clock may be a new one (set again by NTP or the fleet)
        skew = _skew(msg)
        if skew is not None and msg.body["id"] in set_times:
            row.set_time_skew_ms = max(-2**31, min(2**31 - 1, skew))
            samples = []  # the node's clock was set: the samples before it tell of the old clock
        if msg.ts is not None:
            samples = [*samples, msg.ts - arrival][-SAMPLES_KEPT:]
        row.samples = samples
        offset = estimate(samples)
        row.offset_ms = None if offset is None else max(-2**31, min(2**31 - 1, offset))
        row.updated_at = now
        changed[row.device_id] = row
    if changed:
        await DeviceClock.bulk_update(list(changed.values()), CHANGED_FIELDS, using_db=conn)
    return {d: r.offset_ms for d, r in rows.items()}


class ClockKeeper:
    """The worker's part: flags and `set_time` (FLEET_CLOCK_OFFSET_MAX_MS, SET_TIME_EVERY)."""

    def __init__(self, link: MqttLink, settings: Settings) -> None:
        self.link = link
        self.max_ms = settings.clock_offset_max_ms
        self.last: datetime | None = None

    async def tick(self, now: datetime) -> None:
        if self.last is not None and self.last <= now < self.last + KEEP_EVERY:
            return
        self.last = now
        await flag(self.max_ms)
        await self.send_time(now)

    async def send_time(self, now: datetime) -> int:
        """`set_time` to flagged online ESP32 speakers not sent one within SET_TIME_EVERY.

        A Pi keeps its time by the operating system's NTP and has no `set_time`: it is flagged only.
        """
        due = await DeviceClock.filter(
            Q(set_time_at__isnull=True) | Q(set_time_at__lt=now - SET_TIME_EVERY), flagged=True,
            device_id__in=Subquery(Device.filter(online=True, kind="esp32").values("id")),
        ).order_by("device_id").limit(SET_TIME_PER_TICK)
        sent = 0
        for row in due:
            # recorded first: a broker that is down does not make every tick try again
            await DeviceClock.filter(device_id=row.device_id).update(set_time_at=now)
            if await send_set_time(self.link, row.device_id):
                sent += 1
        return sent


async def flag(max_ms: int) -> None:
    """Flag the speakers whose estimate is above max_ms either way; clear the others' flags."""
    beyond = Q(offset_ms__gt=max_ms) | Q(offset_ms__lt=-max_ms)
    await DeviceClock.filter(beyond, flagged=False).update(flagged=True)
    within = Q(offset_ms__isnull=True) | Q(offset_ms__gte=-max_ms, offset_ms__lte=max_ms)
    await DeviceClock.filter(within, flagged=True).update(flagged=False)


async def send_set_time(link: MqttLink, device_id: str) -> bool:
    """The fleet's time as fleet/ingest/clock.py sends it: a recorded command, expiring in a minute."""
    now_ms = time.time_ns() // 1_000_000
    command_id = uuid.uuid4().hex
    args: dict[str, Any] = {"unix_ms": now_ms}
    try:
        topic, payload = make_command(device_id, command_id, "set_time", args, now_ms + SET_TIME_TTL_MS)
        await Command.create(id=command_id, device_id=device_id, name="set_time", args=args,
                             expires_ms=now_ms + SET_TIME_TTL_MS)
        await link.publish(topic, payload)
    except (ContractError, LinkError) as err:
        log.warning("clocks: could not send the time to %s: %s", device_id, err)
        return False
    log.info("clocks: %s's clock is off: set_time sent", device_id)
    return True


async def clocks(*, flagged: bool | None = None, device: str | None = None, limit: int = 100,
                 offset: int = 0) -> tuple[int, list[DeviceClock]]:
    """The speakers' clocks, by device id: (how many match, the page)."""
    query = DeviceClock.all()
    if flagged is not None:
        query = query.filter(flagged=flagged)
    if device is not None:
        query = query.filter(device_id=device)
    return await query.count(), await query.order_by("device_id").offset(offset).limit(limit)


def public(row: DeviceClock | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"device_id": row.device_id, "offset_ms": row.offset_ms, "samples": len(row.samples or []),
            "flagged": row.flagged, "set_time_at": row.set_time_at, "set_time_skew_ms": row.set_time_skew_ms,
            "updated_at": row.updated_at}
