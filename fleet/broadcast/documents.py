"""One speaker's desired-state `speaker` document, built from the broadcasts that target it (docs/
broadcasts.md, "Delivery"). Pure code: the caller reads the database, this decides.

In order:
1. The occurrences within the window: from `now - LOOKBACK` (an entry the node may be about to
   start when a new document replaces the old one stays in it: the nodes start an entry up to
   2 min late) to `now + horizon`; an emergency in force (`in_force_until`) also before that.
2. Quiet hours: a `normal` occurrence starting inside the speaker's ward's quiet hours is skipped
   (`conflicts.plays`).
3. Conflicts: every pair of broadcasts on this speaker is checked with `conflicts.find` (the same
   rule as at scheduling time: level, then order, then the older id); each occurrence that loses
   any pairwise conflict is skipped, naming the winner.
4. Emergencies (`level` emergency): put in only when the speaker's EmergencyDispatch is `fallback`,
   or it has none and the broadcast is older than EMERGENCY_NEW (the emergency path writes its rows
   as it starts). A broadcast in force (`in_force_until`) gets `at` = its start while within the
   nodes' grace (2 min), then `at` = the speaker's reconnect (its last birth, when that came after
   the grace) while in force and not played; otherwise it is left out (never both command and
   entry; never twice on one node).
5. Bounds (CAPACITY, per kind): on a Pi the nearest NORMAL_MAX (30) non-emergency entries, up to
   ENTRIES_MAX (32) in all; on an ESP32 the nearest 3, up to 4 in all (its heap).
6. Volume: the ward's profile at each entry's local time; the document's `volume` is the next
   entry's (the ESP32 has one per document; the Pi also gets each entry's `volume`).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fleet.broadcast import conflicts
from fleet.broadcast.conflicts import Plan
from fleet.broadcast.models import Level
from fleet.broadcast.schedule import Occurrence, QuietHours
from fleet.broadcast.volumes import volume_at

GRACE = timedelta(milliseconds=120_000)  # the nodes' GRACE_MS: an entry still starts this late
LOOKBACK = GRACE
ENTRIES_MAX = 32  # both nodes refuse a longer schedule
NORMAL_MAX = 30  # non-emergency entries; the rest is kept for emergencies
EMERGENCY_NEW = timedelta(seconds=30)  # an emergency without dispatch row this young: its rows may be on their way
REFRESH_LOW = 8  # a cut document is refreshed before fewer than this many future entries remain
REFRESH_AHEAD = timedelta(days=1)  # … or before its last entry is less than this ahead
REFRESH_SLIDE = timedelta(days=1)  # every document is recomputed at least this often (the horizon slides)
DISPATCH_POLL = timedelta(seconds=10)  # an emergency's command in flight: look again this soon
REFRESH_MIN = timedelta(seconds=10)  # a document goes out at most this often (delivery.py holds it)
KINDS = ("esp32", "pi")


@dataclass(frozen=True, slots=True)
class Capacity:
    """How many entries a kind of node is given: `normal` non-emergency ones (the nearest), `total` with
    the emergencies, and a cut document is refreshed before fewer than `low` future ones remain."""

    normal: int
    total: int
    low: int
    ahead: timedelta | None  # … or before its last entry is less than this ahead (None: by `low` only)


# The Pi takes the nodes' 32. The ESP32's heap holds far fewer parsed entries than its 32 (docs/
# broadcasts.md, "Known gap in the firmware": 6 at the edge of its 64k/68k budget, 4 with room for a
# clip download): it is given 3 and a place for one emergency, refreshed when fewer than 2 remain ahead.
CAPACITY = {"pi": Capacity(NORMAL_MAX, ENTRIES_MAX, REFRESH_LOW, REFRESH_AHEAD), "esp32": Capacity(3, 4, 2, None)}


def clip_name(sha256: str) -> str:
    """The clip's name on a node: `c` + the first 24 hex digits of the variant's SHA-256."""
    return "c" + sha256[:24]


def entry_id(broadcast_id: int, start: datetime) -> str:
    """`b<broadcast id>.<occurrence start, Unix s>`."""
    return f"b{broadcast_id}.{int(start.timestamp())}"


def unix_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class SpeakerInfo:
    id: str
    kind: str  # esp32 | pi
    ward: str
    tags: frozenset[str] = frozenset()

    def targeted_by(self, targets: Mapping[str, Sequence[str]]) -> bool:
        """Whether a broadcast's targets name this speaker (its ward, one of its tags, or its id)."""
        return (self.ward in targets.get("wards", ()) or self.id in targets.get("devices", ())
                or any(tag in self.tags for tag in targets.get("tags", ())))


@dataclass(frozen=True, slots=True)
class ClipRef:
    """The clip variant of the speaker's kind."""

    sha256: str
    bytes: int
    url: str = ""  # Pi documents only: the tokenised download URL

    @property
    def name(self) -> str:
        return clip_name(self.sha256)


@dataclass(frozen=True, slots=True)
class Program:
    """A broadcast as the builder sees it, with its occurrences within the window."""

    id: int
    version: int
    level: Level
    order: int
    duration: timedelta
    occurrences: Sequence[Occurrence]
    clip: ClipRef | None  # None: no variant for this kind (a deleted clip): nothing to play
    title: str = ""
    in_force_until: datetime | None = None  # an emergency started now: plays on a speaker back before this
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EmergencyView:
    """What the builder needs about one speaker's emergencies."""

    dispatch: Mapping[int, str] = field(default_factory=dict)  # broadcast id -> EmergencyDispatch.state
    reconnected_at: datetime | None = None  # its last birth
    played: frozenset[str] = frozenset()  # entry ids whose receipt is started or later


@dataclass(frozen=True, slots=True)
class Entry:
    broadcast_id: int
    version: int
    id: str  # entry id
    start: datetime  # the occurrence's start (UTC)
    at: datetime  # when the node plays it (the start, or an emergency's reconnect)
    clip: ClipRef
    emergency: bool
    volume: int


@dataclass(frozen=True, slots=True)
class Skip:
    broadcast_id: int
    version: int
    id: str  # entry id
    start: datetime
    reason: str  # "quiet hours" | "conflict: b<winner> wins (level|order|older)"
    winner_id: int | None = None


@dataclass(slots=True)
class Built:
    doc: dict[str, Any]
    entries: list[Entry]  # in the document, in order
    skipped: list[Skip]  # quiet hours, conflict losers
    cut: list[Entry]  # would play but beyond the bounds: they follow at a refresh
    refresh_at: datetime  # recompute at this time at the latest

    @property
    def clips(self) -> list[ClipRef]:
        seen: dict[str, ClipRef] = {}
        for entry in self.entries:
            seen.setdefault(entry.clip.name, entry.clip)
        return list(seen.values())


def _emergency_at(program: Program, occurrence: Occurrence, view: EmergencyView, now: datetime) -> datetime | None:
    """When the node is to play an emergency's occurrence, or None: not in the document (step 4)."""
    state = view.dispatch.get(program.id)
    if state is None:
        if program.created_at is not None and now - program.created_at < EMERGENCY_NEW:
            return None
    elif state != "fallback":
        return None
    if program.in_force_until is None:  # scheduled ahead like any broadcast: its own time
        return occurrence.start if occurrence.start > now - LOOKBACK else None
    if now >= program.in_force_until:
        return None
    if now < occurrence.start + GRACE:
        return occurrence.start
    if entry_id(program.id, occurrence.start) in view.played:
        return None
    back = view.reconnected_at
    if back is not None and back >= occurrence.start + GRACE:
        return back.replace(microsecond=back.microsecond // 1000 * 1000)  # the node's ms
    return None


def build(speaker: SpeakerInfo, programs: Sequence[Program], now: datetime, *, tz: ZoneInfo,
          quiet: Mapping[str, QuietHours], volume_steps: Sequence[Mapping[str, Any]] | None = None,
          emergency: EmergencyView | None = None, horizon: timedelta = timedelta(days=7),
          normal_max: int = NORMAL_MAX) -> Built:
    """The `speaker` document for one speaker; `programs` are the broadcasts that target it."""
    view = emergency or EmergencyView()
    end = now + horizon
    quiet_speaker = {speaker.id: conflicts.Speaker(speaker.id, speaker.ward)}
    plans: list[Plan] = []
    by_id: dict[int, Program] = {}
    for program in programs:
        in_force = program.in_force_until is not None and now < program.in_force_until
        window = [o for o in program.occurrences
                  if o.start < end and (o.start > now - LOOKBACK or in_force)]
        if program.clip is None or not window:
            continue
        by_id[program.id] = program
        plans.append(Plan(program.id, program.title, program.level, program.order, program.duration,
                          frozenset({speaker.id}), sorted(window)))

    skipped: dict[str, Skip] = {}
    for plan in plans:
        program = by_id[plan.id]  # type: ignore[index]
        for occurrence in plan.occurrences:
            if not conflicts.plays(plan, occurrence, quiet_speaker[speaker.id], quiet):
                key = entry_id(program.id, occurrence.start)
                skipped[key] = Skip(program.id, program.version, key, occurrence.start, "quiet hours")
    for index, this in enumerate(plans):
        for found in conflicts.find(this, plans[index + 1:], quiet_speaker, quiet):
            other = by_id[found.other_id]
            mine = by_id[this.id]  # type: ignore[index]
            if found.winner == "this":
                loser, lost_at, winner = other, found.other_start, mine
            else:
                loser, lost_at, winner = mine, found.start, other
            key = entry_id(loser.id, lost_at)
            skipped.setdefault(key, Skip(loser.id, loser.version, key, lost_at,
                                         f"conflict: b{winner.id} wins ({found.reason})", winner.id))

    steps = volume_steps or None
    normal: list[Entry] = []
    urgent: list[Entry] = []
    refresh = [now + REFRESH_SLIDE]
    for plan in plans:
        program = by_id[plan.id]  # type: ignore[index]
        clip = program.clip
        assert clip is not None
        is_emergency = program.level == Level.EMERGENCY
        if is_emergency:
            state = view.dispatch.get(program.id)
            if state is None and program.created_at is not None and now - program.created_at < EMERGENCY_NEW:
                refresh.append(program.created_at + EMERGENCY_NEW)
            elif state in ("waiting_clip", "sent") and (program.in_force_until is None
                                                        or now < program.in_force_until):
                refresh.append(now + DISPATCH_POLL)
        for occurrence in plan.occurrences:
            key = entry_id(program.id, occurrence.start)
            if key in skipped:
                continue
            if is_emergency:
                at = _emergency_at(program, occurrence, view, now)
                if at is None:
                    continue
                if program.in_force_until is not None:
                    refresh.append(program.in_force_until)
                    if at == occurrence.start:
                        refresh.append(occurrence.start + GRACE)  # then rewritten or left out
            else:
                at = occurrence.start
            volume = volume_at(steps, at.astimezone(tz))
            (urgent if is_emergency else normal).append(
                Entry(program.id, program.version, key, occurrence.start, at, clip, is_emergency, volume))

    normal.sort(key=lambda e: (e.at, e.id))
    urgent.sort(key=lambda e: (e.at, e.id))
    capacity = CAPACITY.get(speaker.kind, CAPACITY["esp32"])
    kept_normal = normal[:max(0, min(normal_max, capacity.normal))]
    kept_urgent = urgent[:max(0, capacity.total - len(kept_normal))]
    cut = normal[len(kept_normal):] + urgent[len(kept_urgent):]
    entries = sorted(kept_normal + kept_urgent, key=lambda e: (e.at, e.id))
    if normal[len(kept_normal):]:  # a cut document: refreshed before its entries run out
        future = [e for e in kept_normal if e.at > now]
        if len(future) >= capacity.low:
            refresh.append(future[len(future) - capacity.low].at + timedelta(milliseconds=1))
        else:
            refresh.append(now + REFRESH_MIN)
        if kept_normal and capacity.ahead is not None:
            refresh.append(kept_normal[-1].at - capacity.ahead)

    upcoming = next((e for e in entries if e.at >= now), None)
    doc_volume = upcoming.volume if upcoming else volume_at(steps, now.astimezone(tz))
    offset = now.astimezone(tz).utcoffset() or timedelta(0)
    schedule: list[dict[str, Any]] = []
    for e in entries:
        item: dict[str, Any] = {"id": e.id, "clip": e.clip.name, "at": unix_ms(e.at)}
        if e.emergency:
            item["emergency"] = True
        if speaker.kind == "pi":
            item["volume"] = e.volume
        schedule.append(item)
    doc: dict[str, Any] = {"volume": doc_volume, "tz_min": int(offset.total_seconds() // 60), "schedule": schedule}
    built = Built(doc, entries, sorted(skipped.values(), key=lambda s: (s.start, s.id)), cut,
                  max(now, min(refresh)))
    if speaker.kind == "pi":
        doc["clips"] = [{"name": c.name, "url": c.url, "sha256": c.sha256, "bytes": c.bytes} for c in built.clips]
    return built


def empty(doc: Mapping[str, Any] | None) -> bool:
    """A document with nothing to play (or none at all)."""
    return not doc or not doc.get("schedule")


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
