"""The broadcasts calendar on the database: targets to speakers, a broadcast's review before it is
saved (occurrences, speakers, quiet-hour skips, conflicts), create, edit (a new version), cancel,
repeat (docs/broadcasts.md). The timing rules are schedule.py's, the conflict rules conflicts.py's.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from fleet.broadcast import conflicts
from fleet.broadcast.conflicts import Conflict, Plan, Speaker
from fleet.broadcast.models import Broadcast, BroadcastStatus, BroadcastVersion, Clip, Level, WardQuietHours
from fleet.broadcast.schedule import Occurrence, QuietHours, ScheduleError, Timing, check_rrule, instant, parse_dates
from fleet.device_queries import with_tag
from fleet.models import RETIRED_STATUSES, Device

SPEAKER_ROLE = "speaker"
OCCURRENCES_CHECKED = 500  # per broadcast, within the conflict window
CONFLICTS_LISTED = 100
TARGETS_MAX = 200  # names in each of wards, tags, devices


class CalendarError(Exception):
    status = 422


class CalendarConflict(CalendarError):
    """The broadcast changed meanwhile, is cancelled already, or the save needs `confirm`."""

    status = 409


@dataclass(frozen=True, slots=True)
class Targets:
    wards: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    def as_json(self) -> dict[str, list[str]]:
        return {"wards": list(self.wards), "tags": list(self.tags), "devices": list(self.devices)}

    @classmethod
    def of(cls, stored: Mapping[str, Sequence[str]]) -> "Targets":
        return cls(tuple(stored.get("wards", ())), tuple(stored.get("tags", ())), tuple(stored.get("devices", ())))


@dataclass(frozen=True, slots=True)
class Definition:
    """What an operator says about a broadcast (create, edit)."""

    title: str
    clip_id: int
    level: Level
    targets: Targets
    start: datetime  # naive wall clock in the fleet's zone (converted by the caller when it had an offset)
    rrule: str = ""
    until: date | None = None
    count: int | None = None
    exceptions: frozenset[date] = field(default_factory=frozenset)
    order: int = 100

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(level=self.level.value, targets=self.targets.as_json(), start=self.start.isoformat(),
                   until=self.until.isoformat() if self.until else None,
                   exceptions=sorted(d.isoformat() for d in self.exceptions))
        return out


@dataclass(slots=True)
class Review:
    """What a save would do: shown by a dry run, and with a 409 when there are conflicts."""

    occurrences: list[Occurrence]  # the next ones (at most the listing's limit)
    speakers: list[str]
    quiet: dict[datetime, list[str]]
    conflicts: list[Conflict]
    conflicts_total: int


def timing_of(definition: Definition, tz: ZoneInfo) -> Timing:
    if not definition.targets.wards and not definition.targets.tags and not definition.targets.devices:
        raise CalendarError("targets: name at least one ward, tag or speaker")
    try:
        return Timing(definition.start, tz, check_rrule(definition.rrule), definition.until, definition.count,
                      definition.exceptions)
    except ScheduleError as err:
        raise CalendarError(str(err)) from err


def stored_timing(broadcast: Broadcast) -> Timing:
    return Timing(datetime.fromisoformat(broadcast.start_local), ZoneInfo(broadcast.timezone), broadcast.rrule,
                  date.fromisoformat(broadcast.until) if broadcast.until else None, broadcast.count,
                  parse_dates(broadcast.exceptions, "exceptions"))


def definition_of(broadcast: Broadcast) -> Definition:
    timing = stored_timing(broadcast)
    return Definition(broadcast.title, broadcast.clip_id, broadcast.level,  # type: ignore[attr-defined]
                      Targets.of(broadcast.targets), timing.start, timing.rrule, timing.until, timing.count,
                      timing.exceptions, broadcast.order)


async def resolve(targets: Targets) -> dict[str, Speaker]:
    """The speakers the targets name: devices whose birth lists the speaker role, not decommissioned,
    in one of the wards, carrying one of the tags, or named."""
    selections = []
    alive = Device.exclude(status__in=RETIRED_STATUSES)  # decommissioned or replaced
    if targets.wards or targets.devices:
        selections.append(alive.filter(Q(ward__in=list(targets.wards)) | Q(id__in=list(targets.devices))))
    selections.extend(with_tag(alive, tag) for tag in targets.tags)
    found: dict[str, Speaker] = {}
    for selection in selections:
        for device_id, ward, roles in await selection.values_list("id", "ward", "roles"):
            if isinstance(roles, list) and SPEAKER_ROLE in roles:
                found[str(device_id)] = Speaker(str(device_id), str(ward))
    return found


async def quiet_hours() -> dict[str, QuietHours]:
    return {row.ward: QuietHours.parse(row.start, row.end) for row in await WardQuietHours.all()}


def ends_at(timing: Timing, duration: timedelta) -> datetime | None:
    """The end of the last occurrence, or None for a rule without end."""
    if timing.rrule and timing.until is None and timing.count is None:
        return None
    last: Occurrence | None = None
    begin = instant(timing.start, timing.tz) - timedelta(days=1)
    horizon = datetime(9999, 12, 29, tzinfo=UTC)
    for occurrence in timing.occurrences(begin, horizon, timing.count or 10**6):
        last = occurrence
    return None if last is None else last.start + duration


class Calendar:
    def __init__(self, tz: ZoneInfo, conflict_days: int, nudge: Callable[[], None] | None = None) -> None:
        self.tz = tz
        self.window = timedelta(days=conflict_days)
        self.nudge = nudge  # wakes the delivery after a change (runtime.broadcasts.nudge)

    async def clip_duration(self, clip_id: int) -> timedelta:
        clip = await Clip.get_or_none(id=clip_id, deleted_at__isnull=True)
        if clip is None:
            raise CalendarError(f"clip_id: no clip {clip_id} in the library")
        return timedelta(milliseconds=clip.duration_ms)

    async def review(self, definition: Definition, broadcast_id: int | None, now: datetime,
                     listed: int = 10) -> Review:
        """What saving the definition would do; CalendarError if it cannot be saved at all."""
        timing = timing_of(definition, self.tz)
        duration = await self.clip_duration(definition.clip_id)
        upcoming = timing.next(now, 1)
        if not upcoming:
            raise CalendarError("the broadcast has no occurrence after now: check start, until, count and exceptions")
        speakers = await resolve(definition.targets)
        quiet = await quiet_hours()
        end = now + self.window
        this = Plan(broadcast_id, definition.title, definition.level, definition.order, duration,
                    frozenset(speakers), timing.occurrences(now, end, OCCURRENCES_CHECKED))
        others: list[Plan] = []
        everyone = dict(speakers)
        still = Broadcast.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now), status=BroadcastStatus.ACTIVE)
        if broadcast_id is not None:
            still = still.exclude(id=broadcast_id)
        for other in await still.prefetch_related("clip"):
            other_speakers = await resolve(Targets.of(other.targets))
            if not other_speakers.keys() & speakers.keys():
                continue
            everyone.update(other_speakers)
            others.append(Plan(other.id, other.title, other.level, other.order,
                               timedelta(milliseconds=other.clip.duration_ms), frozenset(other_speakers),
                               stored_timing(other).occurrences(now, end, OCCURRENCES_CHECKED)))
        found = conflicts.find(this, others, everyone, quiet)
        return Review(occurrences=timing.next(now, listed), speakers=sorted(speakers),
                      quiet=conflicts.quiet_skips(this, everyone, quiet), conflicts=found[:CONFLICTS_LISTED],
                      conflicts_total=len(found))

    async def create(self, definition: Definition, actor: str, now: datetime, *, confirm: bool,
                     repeat_of: int | None = None) -> tuple[Broadcast, Review]:
        review = await self.review(definition, None, now)
        self._confirmed(review, confirm)
        timing = timing_of(definition, self.tz)
        async with in_transaction():
            broadcast = await Broadcast.create(
                **self._fields(definition, timing, await self.clip_duration(definition.clip_id)),
                repeat_of=repeat_of, created_by=actor, updated_by=actor)
            await self._record(broadcast, actor)
        return broadcast, review

    async def edit(self, broadcast: Broadcast, definition: Definition, version: int, actor: str,
                   now: datetime, *, confirm: bool) -> tuple[Broadcast, Review]:
        if broadcast.status == BroadcastStatus.CANCELLED:
            raise CalendarConflict(f"broadcast {broadcast.id} is cancelled; repeat it instead")
        if version != broadcast.version:
            raise CalendarConflict(f"broadcast {broadcast.id} is at version {broadcast.version}, "
                                   f"not {version}: reload it and edit again")
        review = await self.review(definition, broadcast.id, now)
        self._confirmed(review, confirm)
        timing = timing_of(definition, self.tz)
        fields = self._fields(definition, timing, await self.clip_duration(definition.clip_id))
        async with in_transaction():
            # claimed by version: two editors never both make version n+1
            claimed = await Broadcast.filter(id=broadcast.id, version=version,
                                             status=BroadcastStatus.ACTIVE).update(
                **fields, version=version + 1, updated_by=actor, updated_at=now)
            if not claimed:
                raise CalendarConflict(f"broadcast {broadcast.id} changed meanwhile: reload it and edit again")
            await broadcast.refresh_from_db()
            await self._record(broadcast, actor)
        return broadcast, review

    async def cancel(self, broadcast: Broadcast, actor: str, now: datetime) -> Broadcast:
        async with in_transaction():
            claimed = await Broadcast.filter(id=broadcast.id, status=BroadcastStatus.ACTIVE).update(
                status=BroadcastStatus.CANCELLED, version=broadcast.version + 1, updated_by=actor, updated_at=now)
            if not claimed:
                raise CalendarConflict(f"broadcast {broadcast.id} is already cancelled")
            await broadcast.refresh_from_db()
            await self._record(broadcast, actor)
        return broadcast

    def repeat_definition(self, broadcast: Broadcast, start: datetime) -> Definition:
        """A one-off at `start` with the broadcast's clip, targets, level and order."""
        return Definition(f"{broadcast.title} (repeat)"[:200], broadcast.clip_id,  # type: ignore[attr-defined]
                          broadcast.level, Targets.of(broadcast.targets), start, order=broadcast.order)

    async def in_use(self, clip_id: int, now: datetime) -> list[int]:
        """Broadcasts that will still play the clip."""
        rows = await Broadcast.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now), clip_id=clip_id,
                                      status=BroadcastStatus.ACTIVE).order_by("id").values_list("id")
        return [int(row[0]) for row in rows]

    @staticmethod
    def _confirmed(review: Review, confirm: bool) -> None:
        if review.conflicts_total and not confirm:
            raise NeedsConfirmation(review)

    def _fields(self, definition: Definition, timing: Timing, duration: timedelta) -> dict[str, Any]:
        return {"title": definition.title, "clip_id": definition.clip_id, "level": definition.level,
                "targets": definition.targets.as_json(), "start_local": timing.start.isoformat(),
                "timezone": str(self.tz.key), "rrule": timing.rrule,
                "until": timing.until.isoformat() if timing.until else None, "count": timing.count,
                "exceptions": sorted(d.isoformat() for d in timing.exceptions), "order": definition.order,
                "ends_at": ends_at(timing, duration)}

    @staticmethod
    async def _record(broadcast: Broadcast, actor: str) -> None:
        await BroadcastVersion.create(broadcast=broadcast, version=broadcast.version, status=broadcast.status.value,
                                      definition=definition_of(broadcast).as_json(), created_by=actor)


class NeedsConfirmation(CalendarConflict):
    """The broadcast has conflicts: shown to the caller, saved only with `confirm`."""

    def __init__(self, review: Review) -> None:
        super().__init__(f"{review.conflicts_total} conflict(s) with other broadcasts on shared speakers: "
                         "review them and send again with confirm=true to save")
        self.review = review
