"""What the alert rules judge by, loaded for one batch of devices at a time (fleet/ops/rules.py).

Every query here takes the batch's span of device ids (the batch is BATCH devices in id order,
fleet/ops/engine.py, so "first <= device_id <= last" is the batch, cheaper to send than 500 ids)
and reads an indexed column range: (device_id, at) of events, (device_id, received_at) of health, seq_gap's
device_id, ops_presence_change's (device_id, at). The database groups and counts; what comes back
is at most one row per device (per event for open events), so a batch costs a fixed number of
statements whatever the fleet's size.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from tortoise.expressions import Q, Subquery
from tortoise.functions import Count, Max, Min, Sum

from fleet.children.models import ChildDevice
from fleet.ingest.silence import LivenessView
from fleet.liveness import Reason, State
from fleet.models import Device, EventRecord, HealthRecord, SeqGap
from fleet.ops import presence
from fleet.ops.rules import KINDS, ChildFact, Facts, Kind, OpenEvent

OPEN_EVENT_LOOKBACK = timedelta(days=30)  # a start older than this without its end is no longer looked at
PLAYBACK_ROWS_MAX = 20_000  # failed-playback rows read per batch and window (beyond: not counted)


Span = tuple[str, str]  # the first and last device id of a batch


def _within(span: Span) -> Q:
    return Q(device_id__gte=span[0], device_id__lte=span[1])


def offline_since(device: Device, state: State, reason: Reason | None) -> datetime | None:
    if state is not State.OFFLINE:
        return None
    if reason is Reason.SILENT:
        # the sweep's verdict, or (online still true) the judge's: quiet since the last message
        return device.silenced_at if not device.online and device.silenced_at else device.last_seen_at
    return device.last_death_at or device.last_seen_at


def base_facts(device: Device, view: LivenessView) -> Facts:
    verdict = view.judge(device)
    roles = [r for r in device.roles if isinstance(r, str)] if isinstance(device.roles, list) else []
    return Facts(device_id=device.id, kind=device.kind, roles=roles, ward=device.ward, verdict=verdict,
                 offline_since=offline_since(device, verdict.state, verdict.reason),
                 health=device.last_health if isinstance(device.last_health, dict) else None,
                 birth=device.birth if isinstance(device.birth, dict) else None)


async def load(facts: dict[str, Facts], devices: Sequence[Device], needs: Iterable[tuple[str, int | None]],
               now: datetime) -> None:
    """Fill in the batch facts the batch's rules need: (kind name, window in seconds or None)."""
    ids = list(facts)
    if not ids:
        return
    span = (devices[0].id, devices[-1].id)
    loads: dict[tuple[str | None, str | None, int | None], Kind] = {}  # one load per fact and window
    for kind_name, window in needs:
        kind = KINDS[kind_name]
        loads.setdefault((kind.need, kind.event_type, window), kind)
    for (_, _, window), kind in sorted(loads.items(), key=lambda item: (item[1].name, item[0][2] or 0)):
        since = now - timedelta(seconds=window or 0)
        found: Mapping[str, Any]
        if kind.need == "clock":
            sessions = {d.id: (d.epoch, d.session) for d in devices}
            for device_id, offset in (await clock_offsets(span, sessions, now)).items():
                facts[device_id].clock_offset_ms = offset
            continue
        if kind.need == "children":
            for device_id, found_children in (await children(span)).items():
                if device_id in facts:
                    facts[device_id].children = found_children
            continue
        if kind.need == "open_events" and kind.event_type:
            for device_id, events in (await open_events(span, kind.event_type, now)).items():
                if device_id in facts:
                    facts[device_id].open_events[kind.event_type] = events
            continue
        if not window:
            continue
        if kind.need == "presence_changes":
            found = await presence.changes_since(ids, since)
        elif kind.need == "births":
            found = await presence.births_since(ids, since)
        elif kind.need == "playback_failures":
            found = await playback_failures(span, since)
        elif kind.need == "missing":
            found = await missing(span, since)
        elif kind.need == "health_before":
            latest = {d.id: d.last_health_at for d in devices}
            found = await first_health(span, since, latest)
        else:
            continue
        for device_id, value in found.items():
            if device_id in facts:
                getattr(facts[device_id], kind.need)[window] = value


async def children(span: Span) -> dict[str, list[ChildFact]]:
    """The child devices of the batch's Pis (child_device's (parent_id, child_id) key is the range)."""
    rows = await (ChildDevice.filter(parent_id__gte=span[0], parent_id__lte=span[1])
                  .values_list("parent_id", "child_id", "present", "state", "state_since", "last_death_at"))
    found: dict[str, list[ChildFact]] = {}
    for parent_id, child_id, present, state, state_since, death_at in rows:
        since = death_at if present is False else state_since
        found.setdefault(str(parent_id), []).append(ChildFact(str(child_id), present, state, since))
    return found


async def open_events(span: Span, event_type: str, now: datetime) -> dict[str, list[OpenEvent]]:
    """Events of `event_type` started within the lookback whose `end` has not arrived (any order)."""
    rows = await (EventRecord.filter(_within(span), type=event_type, at__gte=now - OPEN_EVENT_LOOKBACK)
                  .annotate(starts=Count("id", _filter=Q(phase="start")), ends=Count("id", _filter=Q(phase="end")),
                            since=Min("at"))
                  .group_by("device_id", "event_id").values_list("device_id", "event_id", "starts", "ends", "since"))
    found: dict[str, list[OpenEvent]] = {}
    for device_id, event_id, starts, ends, since in rows:
        if int(starts) > 0 and int(ends) == 0:
            found.setdefault(str(device_id), []).append(OpenEvent(str(event_id), _aware(since)))
    return found


def _aware(moment: Any) -> datetime:
    """Min() comes back as text on SQLite: parse it."""
    if isinstance(moment, datetime):
        return moment
    return datetime.fromisoformat(str(moment))


async def playback_failures(span: Span, since: datetime) -> dict[str, int]:
    """`playback` events that ended failed (`end` or `once` with data.status failed) since `since`."""
    rows = await (EventRecord.filter(_within(span), type="playback", phase__in=["end", "once"], at__gte=since)
                  .limit(PLAYBACK_ROWS_MAX).values_list("device_id", "data"))
    counts: dict[str, int] = {}
    for device_id, data in rows:
        if isinstance(data, dict) and data.get("status") == "failed":
            counts[str(device_id)] = counts.get(str(device_id), 0) + 1
    return counts


async def missing(span: Span, since: datetime) -> dict[str, int]:
    """seq numbers missing in the open gaps detected since `since`, per device."""
    rows = await (SeqGap.filter(_within(span), open=True, detected_at__gte=since)
                  .annotate(last=Sum("last_seq"), first=Sum("first_seq"), n=Count("id"))
                  .group_by("device_id").values_list("device_id", "last", "first", "n"))
    return {str(d): int(last) - int(first) + int(n) for d, last, first, n in rows}


async def first_health(span: Span, since: datetime,
                       latest: Mapping[str, datetime | None]) -> dict[str, dict[str, Any]]:
    """Each device's first health body received since `since`, unless that is its latest health
    (`latest`: each device's last_health_at): one row in the window is nothing to compare with."""
    firsts = (HealthRecord.filter(_within(span), received_at__gte=since).annotate(first=Min("id"))
              .group_by("device_id").values("first"))
    rows = await HealthRecord.filter(id__in=Subquery(firsts)).values_list("device_id", "received_at", "data")
    found: dict[str, dict[str, Any]] = {}
    for device_id, received_at, data in rows:
        last = latest.get(str(device_id))
        if isinstance(data, dict) and (last is None or received_at < last):
            found[str(device_id)] = data
    return found


async def clock_offsets(span: Span, sessions: dict[str, tuple[int, int | None]],
                        now: datetime) -> dict[str, int]:
    """Arrival minus device time (ms) of each device's last health within the last hour, only when
    it came in the device's current stream: a replay of an older stream arrives late by design."""
    lasts = (HealthRecord.filter(_within(span), received_at__gte=now - timedelta(hours=1))
             .annotate(last=Max("id")).group_by("device_id").values("last"))
    rows = await HealthRecord.filter(id__in=Subquery(lasts)).values_list("device_id", "epoch", "ses", "device_ts",
                                                                         "received_at")
    offsets: dict[str, int] = {}
    for device_id, epoch, ses, device_ts, received_at in rows:
        if device_ts is None or sessions.get(str(device_id)) != (epoch, ses):
            continue
        offsets[str(device_id)] = int(received_at.timestamp() * 1000) - int(device_ts)
    return offsets
