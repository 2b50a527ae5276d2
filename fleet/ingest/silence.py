"""The fleet's verdict on silent devices, in the database: the sweep, the ingest's part, the filters.

fleet/liveness.py decides a device's state from what is stored; this module keeps what is stored
true and finds devices by state in SQL:
- the ingest notes each message (`note_birth`, `note_heard`): the time in Unix ms and the
  period the device reports health at, so the arithmetic below runs in SQL on both databases;
- the sweep (`SilenceSweep`) writes the verdict `silent` (online false, `silenced_at`) for
  devices overdue by period x silent_after_periods, at start and every `presence_sweep_s`, at
  most SWEEP_BATCH devices per statement and SWEEP_STATEMENTS statements per sweep (the rest in
  the next sweep), and only while the fleet hears the broker; each device it marks gets a
  PresenceChange row (`silent`) in the same transaction as its update (docs/ops.md);
- `state_filter` is the state table as SQL conditions, for `GET /api/devices?state=`.
"""

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import F, Q, Subquery
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from contract import Upstream
from fleet.ingest.link import MqttLink
from fleet.liveness import (
    SET_HEALTH_PERIOD,
    Hearing,
    PresenceRecord,
    State,
    Timing,
    Verdict,
    expected_period,
    judge,
    period_from_desired,
    period_from_result,
    revives,
)
from fleet.models import RETIRED_STATUSES, Command, Device
from fleet.ops.models import PresenceChange
from fleet.settings import Settings
from fleet.tasks import turn_to_end

log = logging.getLogger(__name__)

SWEEP_BATCH = 500  # devices marked silent per statement
SWEEP_STATEMENTS = 10  # statements per sweep: at most 5,000 devices; the rest in the next sweep
# the fields note_birth and note_heard may change, for the ingest's saves
BORN_FIELDS = ("last_seen_ms", "health_period_s")
HEARD_FIELDS = ("last_seen_ms", "online", "health_period_s")


def unix_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# -- the ingest's part ----------------------------------------------------------------------

def note_birth(device: Device, body: dict[str, Any], now: datetime) -> None:
    """A birth that counted: heard now, and the health period it declares."""
    device.last_seen_ms = unix_ms(now)
    device.health_period_s = expected_period(body.get("period_s"))


def newest_sessions(batch: Sequence[Upstream]) -> dict[str, int]:
    """The highest stream number of each device's numbered messages in a batch."""
    newest: dict[str, int] = {}
    for msg in batch:
        if msg.seq is not None and msg.ses > newest.get(msg.device_id, -1):
            newest[msg.device_id] = msg.ses
    return newest


def note_heard(device: Device, newest_ses: int, now: datetime) -> None:
    """Numbered messages were stored for `device`: heard now, and online again unless a death
    ended the stream they came in (fleet.liveness.revives). The caller saves HEARD_FIELDS."""
    device.last_seen_ms = unix_ms(now)
    if not device.online and revives(device.online, device.ended_session, newest_ses):
        log.info("device %s: heard again in session %d: online", device.id, newest_ses)
        device.online = True


async def note_command_result(conn: BaseDBAsyncClient, device: Device, msg: Upstream) -> None:
    """An `ok` answer to the fleet's `set_health_period` changes the period the fleet judges by."""
    period = period_from_result(msg.body["status"], msg.body.get("detail"))
    if period is None:
        return
    if await Command.filter(id=msg.body["id"], device_id=device.id, name=SET_HEALTH_PERIOD).using_db(conn).exists():
        device.health_period_s = period


def note_reported_state(device: Device, body: dict[str, Any]) -> None:
    """A desired-state document the device applied may set its period (`health_period_s`)."""
    if body["status"] == "applied" and body["version"] == device.desired_version:
        period = period_from_desired(device.desired_doc)
        if period is not None:
            device.health_period_s = period


# -- the verdict in SQL -----------------------------------------------------------------------

def _quiet_beyond(periods: int, now_ms: int, hearing: Hearing) -> Q:
    """Nothing heard for `periods` health periods, counting only time the fleet heard the broker:
    max(last_seen, hearing since) + period x periods < now, as two conditions SQL can index."""
    assert hearing.listening_for is not None
    listening_s = hearing.listening_for.total_seconds()
    # period x periods < listening  <=>  period < ceil(listening / periods) for a whole period
    # never heard (a birth, not its time, on record): quiet since the fleet began to hear
    heard = Q(quiet_deadline_ms__lt=now_ms) | Q(last_seen_ms__isnull=True)
    return heard & Q(health_period_s__lt=math.ceil(listening_s / periods))


def _with_deadline(query: QuerySet[Device], periods: int) -> QuerySet[Device]:
    return query.annotate(quiet_deadline_ms=F("last_seen_ms") + F("health_period_s") * (periods * 1000))


def _ids(query: QuerySet[Device]) -> Subquery:
    return Subquery(query.values("id"))


def _seen() -> Q:
    return ~Q(status__in=RETIRED_STATUSES) & (Q(session__isnull=False) | Q(last_seen_at__isnull=False))


def state_filter(query: QuerySet[Device], state: State, now: datetime, hearing: Hearing,
                 timing: Timing) -> QuerySet[Device]:
    """`query` narrowed to the devices fleet.liveness.judge would give `state` (same table, in SQL)."""
    if state is State.DECOMMISSIONED:  # retired: decommissioned or replaced
        return query.filter(status__in=RETIRED_STATUSES)
    if state is State.NEVER_SEEN:
        return query.filter(~Q(status__in=RETIRED_STATUSES), session__isnull=True, last_seen_at__isnull=True)
    if state is State.UNKNOWN:
        return query.filter(_seen()) if not hearing.listening else query.filter(id__in=[])
    if not hearing.listening:
        return query.filter(id__in=[])
    now_ms = unix_ms(now)
    silent = _with_deadline(query, timing.silent_after_periods)
    if state is State.OFFLINE:
        overdue = silent.filter(_seen(), online=True).filter(_quiet_beyond(timing.silent_after_periods, now_ms,
                                                                            hearing))
        return query.filter(_seen()).filter(Q(online=False) | Q(id__in=_ids(overdue)))
    stale = _with_deadline(query, timing.stale_after_periods).filter(_seen(), online=True).filter(
        _quiet_beyond(timing.stale_after_periods, now_ms, hearing))
    if state is State.STALE:
        overdue = silent.filter(online=True).filter(_quiet_beyond(timing.silent_after_periods, now_ms, hearing))
        return query.filter(id__in=_ids(stale)).exclude(id__in=_ids(overdue))
    return query.filter(_seen(), online=True).exclude(id__in=_ids(stale))


# -- the sweep -------------------------------------------------------------------------------

async def sweep_once(now: datetime, hearing: Hearing, timing: Timing) -> list[str]:
    """Mark the devices overdue by period x silent_after_periods as offline (`silent`); returns
    their ids. Nothing while the fleet does not hear the broker: its deafness is not their silence."""
    if not hearing.listening:
        return []
    overdue = _with_deadline(Device.filter(_seen(), online=True), timing.silent_after_periods).filter(
        _quiet_beyond(timing.silent_after_periods, unix_ms(now), hearing))
    marked: list[str] = []
    for _ in range(SWEEP_STATEMENTS):
        ids = [str(i) for i in await overdue.limit(SWEEP_BATCH).values_list("id", flat=True)]
        if not ids:
            break
        async with in_transaction() as conn:
            # the conditions again: a message stored since the select keeps its device online
            count = await overdue.filter(id__in=ids).using_db(conn).update(online=False, silenced_at=now)
            done = ids if count == len(ids) else [
                str(i) for i in await Device.filter(id__in=ids, online=False, silenced_at=now)
                .using_db(conn).values_list("id", flat=True)]
            # the verdict's record, in the verdict's transaction (docs/ops.md, "Presence and its timings")
            await PresenceChange.bulk_create(
                [PresenceChange(device_id=i, at=now, online=False, reason="silent") for i in done], using_db=conn)
        marked.extend(done)
        if len(ids) < SWEEP_BATCH:
            break
    return marked


class SilenceSweep:
    """Runs sweep_once at start and every `every_s` until cancelled; a failed sweep (the database
    away) is logged, once per kind of failure in a row, and tried again at the next tick."""

    def __init__(self, hearing: Callable[[], Hearing], timing: Timing, every_s: float) -> None:
        self.hearing = hearing
        self.timing = timing
        self.every_s = every_s
        self.swept = 0  # devices marked silent since the start
        self.last_error: str | None = None

    async def run(self) -> None:
        while True:
            try:
                marked = await turn_to_end(sweep_once(datetime.now(UTC), self.hearing(), self.timing))
            except Exception as err:
                kind = type(err).__name__
                if self.last_error != kind:
                    log.error("presence sweep failed (%s: %.200s); trying again every %.1f s", kind, err,
                              self.every_s)
                self.last_error = kind
            else:
                if self.last_error is not None:
                    log.info("presence sweep works again")
                self.last_error = None
                if marked:
                    self.swept += len(marked)
                    shown = ", ".join(marked[:10]) + (f" and {len(marked) - 10} more" if len(marked) > 10 else "")
                    log.warning("silent for %d+ health periods, now offline: %s",
                                self.timing.silent_after_periods, shown)
            await asyncio.sleep(self.every_s)


def hearing_of(listening_for_s: float | None) -> Hearing:
    """From the link's LinkState.listening_for_s."""
    return Hearing(None if listening_for_s is None else timedelta(seconds=listening_for_s))


def timing_of(settings: Settings) -> Timing:
    return Timing(stale_after_periods=settings.stale_after_periods,
                  silent_after_periods=settings.silent_after_periods)


@dataclass(frozen=True, slots=True)
class LivenessView:
    """One moment's inputs to the verdict besides the device: for a request or a page, so every
    device in one answer is judged at the same `now` with the same link state."""

    now: datetime
    hearing: Hearing
    timing: Timing

    @classmethod
    def of(cls, link: MqttLink, settings: Settings) -> "LivenessView":
        return cls(datetime.now(UTC), hearing_of(link.state().listening_for_s), timing_of(settings))

    def judge(self, device: PresenceRecord) -> Verdict:
        return judge(device, self.now, self.hearing, self.timing)

    def filter(self, query: QuerySet[Device], state: State) -> QuerySet[Device]:
        return state_filter(query, state, self.now, self.hearing, self.timing)
