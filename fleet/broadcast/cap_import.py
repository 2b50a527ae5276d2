"""CAP alerts on the database: an imported alert's draft (its speakers, its clip, the calendar's review),
an operator's confirmation (the broadcast made, edited or cancelled) or refusal (docs/broadcasts.md,
"CAP 1.2"). Parsing, checking and the mapping rules are cap.py's; the clip is the library's, the
broadcast the calendar's.
"""

import asyncio
import hashlib
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from fleet.broadcast import cap
from fleet.broadcast.audio_tools import AudioRefused
from fleet.broadcast.calendar import SPEAKER_ROLE, Calendar, Definition, Review, Targets
from fleet.broadcast.cap import Alert, CapRefused, Info, Place
from fleet.broadcast.cap_models import CapAlert, CapState
from fleet.broadcast.emergency import IN_FORCE_DEFAULT_MIN, IN_FORCE_MAX_MIN, EmergencyError, Started
from fleet.broadcast.library import AudioConflict, Library, check_text, speech_sha256
from fleet.broadcast.models import Broadcast, BroadcastStatus, Clip, Level
from fleet.broadcast.schedule import local_start
from fleet.models import Device, DeviceStatus

# a broadcast "now" starts this long after the confirmation: the speakers' documents and clips go out
# first (as a repeat's default start, fleet/api/routes/broadcasts.py)
START_LEAD = timedelta(minutes=1)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(slots=True)
class Imported:
    row: CapAlert
    review: Review | None


@dataclass(slots=True)
class Confirmed:
    row: CapAlert
    action: str  # created | edited | emergency (started at once) | cancelled
    broadcast: Broadcast | None  # made or edited; None for a Cancel
    review: Review | None
    cancelled: list[Broadcast]  # a Cancel's
    cancelled_alerts: list[int]  # drafts an Update or a Cancel replaced
    targets_before: dict[str, list[str]] | None = None  # an edited broadcast's targets before the edit


# the emergency button's start (fleet/broadcast/emergency.py start_emergency, bound to the runtime)
EmergencyStart = Callable[..., Awaitable[Started]]


def in_force_minutes(expires: str | None, now: datetime) -> int:
    """An emergency started now stays in force until the alert expires, within the button's bounds."""
    if not expires:
        return IN_FORCE_DEFAULT_MIN
    minutes = math.ceil((datetime.fromisoformat(expires) - now).total_seconds() / 60)
    return max(1, min(IN_FORCE_MAX_MIN, minutes))


def _start(draft: dict[str, Any], now: datetime) -> datetime:
    stored = datetime.fromisoformat(draft["start"]) if draft.get("start") else None
    return stored if stored is not None and stored > now + START_LEAD else now + START_LEAD


class CapImport:
    def __init__(self, calendar: Calendar, library: Library, start_emergency: EmergencyStart | None = None) -> None:
        self.calendar = calendar
        self.library = library
        self.start_emergency = start_emergency  # None: no broadcasts worker in this process

    # -- import ------------------------------------------------------------------------------------

    async def import_alert(self, document: bytes, actor: str, now: datetime) -> Imported:
        """Parse, check and map a CAP 1.2 document to a draft; CapInvalid, CapRefused, AudioError refuse it."""
        alert = await asyncio.to_thread(cap.parse, document)
        if alert.status != "Actual":
            raise CapRefused(f"status {alert.status}: only Actual alerts are broadcast (an Exercise, System, Test "
                             "or Draft message is refused, and nothing is stored)")
        if alert.msg_type in ("Ack", "Error"):
            raise CapRefused(f"msgType {alert.msg_type}: an acknowledgement or an error message has nothing to "
                             "broadcast")
        existing = await CapAlert.get_or_none(sender=alert.sender, identifier=alert.identifier)
        if existing is not None:
            raise CapRefused(f"this alert (sender and identifier) was imported already as CAP alert {existing.id}",
                             409)
        referenced = await self._referenced(alert)
        if alert.msg_type == "Cancel":
            if not referenced:
                raise CapRefused("/alert/references: this Cancel names no alert imported here: nothing to cancel")
            draft = _cancel_draft(referenced)
            return Imported(await self._store(alert, document, draft, actor), None)
        info = cap.chosen_info(alert)
        if info is None:
            raise CapRefused(f"/alert/info: an {alert.msg_type} without <info> has nothing to broadcast")
        draft, definition, edits = await self._broadcast_draft(alert, info, referenced, actor, now)
        review = await self.calendar.review(definition, edits, now)
        return Imported(await self._store(alert, document, draft, actor), review)

    async def _referenced(self, alert: Alert) -> list[CapAlert]:
        """The imported alerts its <references> name (by sender and identifier), oldest first."""
        if not alert.references:
            return []
        match = Q()
        for ref in alert.references:
            match |= Q(sender=ref.sender, identifier=ref.identifier)
        return list(await CapAlert.filter(match).order_by("id"))

    async def _broadcast_draft(self, alert: Alert, info: Info, referenced: list[CapAlert], actor: str,
                               now: datetime) -> tuple[dict[str, Any], Definition, int | None]:
        notes: list[str] = []
        if info.expires is not None and info.expires <= now:
            raise CapRefused(f"the alert expired at {info.expires.isoformat()}: nothing to broadcast")
        if not info.areas:
            raise CapRefused("/alert/info/area: the alert names no area: which speakers is unknown")
        match = await asyncio.to_thread(cap.match_area, info.areas, await self.places())  # bounded work
        notes.extend(match.notes)
        if not match.speakers:
            raise CapRefused("the alert's area covers none of the city's speakers: no ward name in its areaDesc, "
                             "and no speaker with coordinates inside its polygons or circles")
        if len(match.devices) > cap.TARGETS_MAX:
            raise CapRefused(f"the area holds {len(match.devices)} single speakers outside whole wards; a broadcast "
                             f"names at most {cap.TARGETS_MAX}")
        level = cap.level_of(info)
        effective = info.effective or alert.sent  # CAP: no <effective> means effective when sent
        start = effective if effective > now + START_LEAD else None
        if alert.msg_type == "Update" and not referenced:
            notes.append("this Update names no alert imported here: it is taken as a new alert")
        edits = _broadcast_to_edit(referenced)
        if edits is not None and not await Broadcast.exists(id=edits, status=BroadcastStatus.ACTIVE):
            notes.append(f"broadcast {edits} of the updated alert is cancelled: confirming makes a new one")
            edits = None
        title = cap.title_of(info)
        clip_id, clip_source, reused, voice = await self._clip(info, title, notes, actor)
        definition = Definition(title, clip_id, level, Targets(match.wards, (), match.devices),
                                local_start(start or now + START_LEAD, self.calendar.tz))
        draft = {
            "kind": "broadcast", "title": title, "level": level.value,
            "start": start.isoformat() if start else None,
            "expires": info.expires.isoformat() if info.expires else None,
            "targets": definition.targets.as_json(), "speakers": list(match.speakers),
            "wards_named": list(match.named_wards), "in_shapes": list(match.in_shapes),
            "clip_id": clip_id, "clip_source": clip_source, "clip_reused": reused, "voice": voice,
            "language": info.language, "event": info.event, "urgency": info.urgency, "severity": info.severity,
            "certainty": info.certainty, "updates": [r.id for r in referenced], "edits_broadcast": edits,
            "cancels": [], "cancels_broadcasts": [], "notes": notes}
        return draft, definition, edits

    async def places(self) -> list[Place]:
        """Every speaker (a device whose birth lists the speaker role, not decommissioned) and where it is."""
        rows = await Device.exclude(status=DeviceStatus.DECOMMISSIONED).values_list(
            "id", "ward", "roles", "latitude", "longitude")
        return [Place(str(device_id), str(ward or ""), lat, lon) for device_id, ward, roles, lat, lon in rows
                if isinstance(roles, list) and SPEAKER_ROLE in roles]

    async def _clip(self, info: Info, title: str, notes: list[str], actor: str) -> tuple[int, str, bool, str | None]:
        """The broadcast's clip: the alert's audio resource, else its text spoken; (id, source, reused, voice)."""
        audio = next((r for r in info.resources if r.is_audio and r.content is not None), None)
        if audio is not None and audio.content is not None:
            found = await _clip_by_source(hashlib.sha256(audio.content).hexdigest())
            if found is not None:
                return found, "resource", True, None
            upload = self.library.temp_path()
            await asyncio.to_thread(upload.write_bytes, audio.content)
            try:
                clip = await self.library.add_upload(upload, title, actor)  # removes the file
                return clip.id, "resource", False, None
            except AudioConflict:
                found = await _clip_by_source(hashlib.sha256(audio.content).hexdigest())
                if found is None:
                    raise
                return found, "resource", True, None
            except AudioRefused as err:
                notes.append(f"the audio resource '{audio.description[:80]}' was refused by the library ({err}); "
                             "the text is spoken instead")
        elif any(r.is_audio and r.uri for r in info.resources):
            notes.append("the audio resource is a link (uri) only: the fleet fetches no URL an alert names "
                         "(it could point inside the city's network); the text is spoken instead")
        voice = cap.voice_of(info.language)
        if voice is None:
            raise CapRefused(f"/alert/info/language: {info.language[:20]} has no text-to-speech voice (vi, en) and "
                             "the alert carries no audio")
        text, cut = cap.speech_text(info)
        if cut:
            notes.append(f"the text was cut to {cap.TEXT_MAX} characters for text-to-speech")
        text = check_text(_CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n")))
        found = await _clip_by_source(speech_sha256(text, voice))
        if found is not None:
            return found, "tts", True, voice
        try:
            clip = await self.library.add_speech(text, voice, title, actor)
        except AudioConflict:
            found = await _clip_by_source(speech_sha256(text, voice))
            if found is None:
                raise
            return found, "tts", True, voice
        return clip.id, "tts", False, voice

    async def _store(self, alert: Alert, document: bytes, draft: dict[str, Any], actor: str) -> CapAlert:
        try:
            return await CapAlert.create(identifier=alert.identifier, sender=alert.sender, sent=alert.sent,
                                         msg_type=alert.msg_type, status=alert.status, document=document, draft=draft,
                                         created_by=actor)
        except IntegrityError as err:  # the same alert imported at the same moment by another request
            raise CapRefused("this alert (sender and identifier) was imported already", 409) from err

    # -- review, confirm, refuse ---------------------------------------------------------------------

    def definition(self, row: CapAlert, now: datetime) -> Definition:
        draft = row.draft
        return Definition(draft["title"], int(draft["clip_id"]), Level(draft["level"]),
                          Targets.of(draft["targets"]), local_start(_start(draft, now), self.calendar.tz))

    async def review(self, row: CapAlert, now: datetime) -> Review | None:
        """What confirming a draft would do now (None for a Cancel, or once it is decided)."""
        if row.state != CapState.DRAFT or row.draft.get("kind") != "broadcast":
            return None
        return await self.calendar.review(self.definition(row, now), row.draft.get("edits_broadcast"), now)

    async def confirm(self, row: CapAlert, actor: str, now: datetime, *, confirm: bool) -> Confirmed:
        """Carry a draft out: make (or edit) its broadcast, or cancel what a Cancel names. The calendar's
        NeedsConfirmation (conflicts, no `confirm`) and CalendarError pass through; the draft stays a draft."""
        expires = row.draft.get("expires")
        if row.state == CapState.DRAFT and expires and datetime.fromisoformat(expires) <= now:
            raise CapRefused(f"CAP alert {row.id} expired at {expires}: refuse it", 409)
        await self._claim(row, CapState.CONFIRMED, actor, now)
        try:
            if row.draft["kind"] == "cancel":
                done = await self._cancel(row, actor, now)
            else:
                done = await self._broadcast(row, actor, now, confirm=confirm)
        except BaseException:
            await CapAlert.filter(id=row.id, state=CapState.CONFIRMED).update(
                state=CapState.DRAFT, decided_at=None, decided_by=None)
            raise
        await row.refresh_from_db()
        return done

    async def refuse(self, row: CapAlert, actor: str, now: datetime, reason: str) -> CapAlert:
        await self._claim(row, CapState.REFUSED, actor, now, reason=reason or None)
        await row.refresh_from_db()
        return row

    async def _claim(self, row: CapAlert, state: CapState, actor: str, now: datetime, **fields: Any) -> None:
        claimed = await CapAlert.filter(id=row.id, state=CapState.DRAFT).update(
            state=state, decided_at=now, decided_by=actor, **fields)
        if not claimed:
            await row.refresh_from_db()
            raise CapRefused(f"CAP alert {row.id} is {row.state.value}, not a draft", 409)

    async def _broadcast(self, row: CapAlert, actor: str, now: datetime, *, confirm: bool) -> Confirmed:
        draft = row.draft
        definition = self.definition(row, now)
        # read again: an alert it updates may have been confirmed since this Update was imported
        edits = _broadcast_to_edit(list(await CapAlert.filter(id__in=draft.get("updates") or []).order_by("id")))
        broadcast = await Broadcast.get_or_none(id=edits, status=BroadcastStatus.ACTIVE) if edits else None
        before = dict(broadcast.targets) if broadcast is not None else None
        at_once = _start(draft, now) == now + START_LEAD  # no effective time ahead: "now"
        if broadcast is not None:
            action = "edited"
            broadcast, review = await self.calendar.edit(broadcast, definition, broadcast.version, actor, now,
                                                         confirm=confirm)
        elif definition.level == Level.EMERGENCY and at_once and self.start_emergency is not None:
            # the emergency button's path: commands to the online speakers at once, the others by desired state
            action = "emergency"
            try:
                started = await self.start_emergency(
                    actor=actor, title=definition.title, clip_id=definition.clip_id, targets=definition.targets,
                    confirm=True, in_force_min=in_force_minutes(draft.get("expires"), now), now=now)
            except EmergencyError as err:
                raise CapRefused(str(err), err.status) from err
            broadcast, review = started.broadcast, started.review
        else:
            action = "created"
            broadcast, review = await self.calendar.create(definition, actor, now, confirm=confirm)
        if action != "emergency" and definition.level == Level.EMERGENCY and draft.get("expires"):
            await Broadcast.filter(id=broadcast.id).update(in_force_until=datetime.fromisoformat(draft["expires"]))
            await broadcast.refresh_from_db()
        await CapAlert.filter(id=row.id).update(broadcast_id=broadcast.id)
        superseded = await self._supersede(draft.get("updates") or [], row, actor, now)
        return Confirmed(row, action, broadcast, review, [], superseded, before)

    async def _cancel(self, row: CapAlert, actor: str, now: datetime) -> Confirmed:
        # read again: an alert it names may have been confirmed since the Cancel was imported
        named = await CapAlert.filter(id__in=row.draft.get("cancels") or []).order_by("id")
        made = {r.broadcast_id for r in named if r.state == CapState.CONFIRMED and r.broadcast_id}
        cancelled: list[Broadcast] = []
        for broadcast in await Broadcast.filter(id__in=sorted(made), status=BroadcastStatus.ACTIVE).order_by("id"):
            cancelled.append(await self.calendar.cancel(broadcast, actor, now))
        superseded = await self._supersede([r.id for r in named], row, actor, now)
        return Confirmed(row, "cancelled", None, None, cancelled, superseded)

    @staticmethod
    async def _supersede(alert_ids: list[int], by: CapAlert, actor: str, now: datetime) -> list[int]:
        """Drafts among the alerts an Update or a Cancel names: cancelled, they will not go out."""
        drafts = await CapAlert.filter(id__in=alert_ids, state=CapState.DRAFT).values_list("id", flat=True)
        await CapAlert.filter(id__in=list(drafts), state=CapState.DRAFT).update(
            state=CapState.CANCELLED, decided_at=now, decided_by=actor,
            reason=f"{'cancelled' if by.msg_type == 'Cancel' else 'replaced'} by CAP alert {by.id}")
        return [int(i) for i in drafts]  # type: ignore[call-overload]


def _broadcast_to_edit(referenced: list[CapAlert]) -> int | None:
    """The broadcast an Update replaces: the newest confirmed alert it names that made one."""
    made = [r.broadcast_id for r in referenced if r.state == CapState.CONFIRMED and r.broadcast_id]
    return made[-1] if made else None


def _cancel_draft(referenced: list[CapAlert]) -> dict[str, Any]:
    broadcasts = sorted({r.broadcast_id for r in referenced if r.state == CapState.CONFIRMED and r.broadcast_id})
    notes = [f"CAP alert {r.id} is {r.state.value}: nothing to cancel there" for r in referenced
             if r.state in (CapState.CANCELLED, CapState.REFUSED)]
    return {"kind": "cancel", "title": None, "level": None, "start": None, "expires": None, "targets": None,
            "speakers": [], "wards_named": [], "in_shapes": [], "clip_id": None, "clip_source": None,
            "clip_reused": False, "voice": None, "language": None, "event": None, "urgency": None, "severity": None,
            "certainty": None, "updates": [], "edits_broadcast": None,
            "cancels": [r.id for r in referenced], "cancels_broadcasts": broadcasts, "notes": notes}


async def _clip_by_source(source_sha256: str) -> int | None:
    clip = await Clip.filter(source_sha256=source_sha256, deleted_at__isnull=True).first()
    return clip.id if clip is not None else None
