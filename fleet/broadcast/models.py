"""What the fleet stores about clips and broadcasts (Tortoise ORM; app label "models").

Pure storage: the rules live in library.py, schedule.py and conflicts.py; the bytes under
FLEET_AUDIO_DIR (docs/broadcasts.md).
"""

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class Clip(Model):
    """One clip of the library: an upload or a text-to-speech notice, in one variant per speaker kind."""

    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=200)
    source = fields.CharField(max_length=8)  # upload | tts
    # the SHA-256 of what was uploaded (the file, or "tts\0<voice>\0<text>"): the same audio twice is refused
    source_sha256 = fields.CharField(max_length=64, db_index=True)
    source_format = fields.CharField(max_length=32)  # ffprobe's format name (wav, mp3, ogg, mov,mp4,m4a,…)
    source_bytes = fields.BigIntField()
    text: str | None = fields.TextField(null=True)  # the text of a TTS clip
    voice = fields.CharField(max_length=16, null=True)
    duration_ms = fields.IntField()
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)
    created_by = fields.CharField(max_length=80)
    # deleted: its files are gone, the row stays as the history of the broadcasts that played it
    deleted_at = fields.DatetimeField(null=True)
    deleted_by = fields.CharField(max_length=80, null=True)

    class Meta:
        table = "audio_clip"


class ClipFile(Model):
    """A clip's variant for one speaker kind: the bytes a speaker downloads, by SHA-256."""

    id = fields.IntField(primary_key=True)
    clip: fields.ForeignKeyRelation[Clip] = fields.ForeignKeyField("models.Clip", related_name="files",
                                                                   on_delete=fields.CASCADE)
    kind = fields.CharField(max_length=16)  # esp32 | pi
    sha256 = fields.CharField(max_length=64, db_index=True)
    bytes = fields.BigIntField()
    sample_rate = fields.IntField()
    duration_ms = fields.IntField()
    loudness_lufs = fields.FloatField()  # integrated loudness of the stored file (ffmpeg ebur128)
    true_peak_dbtp = fields.FloatField()

    class Meta:
        table = "audio_clip_file"
        unique_together = (("clip", "kind"),)


class Level(StrEnum):
    NORMAL = "normal"
    PRIORITY = "priority"
    EMERGENCY = "emergency"


LEVEL_RANK = {Level.NORMAL: 0, Level.PRIORITY: 1, Level.EMERGENCY: 2}


class BroadcastStatus(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"


class Broadcast(Model):
    """A broadcast's current version; every version's definition is also in BroadcastVersion."""

    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=200)
    clip: fields.ForeignKeyRelation[Clip] = fields.ForeignKeyField("models.Clip", related_name="broadcasts",
                                                                   on_delete=fields.RESTRICT)
    level = fields.CharEnumField(Level, max_length=16)
    # {"wards": [...], "tags": [...], "devices": [...]}
    targets: dict[str, list[str]] = fields.JSONField()
    start_local = fields.CharField(max_length=19)  # YYYY-MM-DDTHH:MM:SS, wall clock in `timezone`
    timezone = fields.CharField(max_length=64)
    rrule = fields.CharField(max_length=500, default="")  # empty: once
    until = fields.CharField(max_length=10, null=True)  # last local date, inclusive
    count: int | None = fields.IntField(null=True)
    exceptions: list[str] = fields.JSONField(default=list)  # local dates
    order = fields.IntField(default=100)
    # the end of its last occurrence (UTC); None while it recurs without end. Lets the database
    # pick the broadcasts that can still play (conflict checks, clips in use)
    ends_at = fields.DatetimeField(null=True, db_index=True)
    status = fields.CharEnumField(BroadcastStatus, max_length=16, default=BroadcastStatus.ACTIVE, db_index=True)
    version = fields.IntField(default=1)
    repeat_of: int | None = fields.IntField(null=True)  # the broadcast a repeat copies
    # emergency: it still plays on a speaker that comes back before this (docs/broadcasts.md, "Emergency")
    in_force_until = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    created_by = fields.CharField(max_length=80)
    updated_at = fields.DatetimeField(auto_now=True)
    updated_by = fields.CharField(max_length=80)

    class Meta:
        table = "broadcast"


class BroadcastVersion(Model):
    id = fields.IntField(primary_key=True)
    broadcast: fields.ForeignKeyRelation[Broadcast] = fields.ForeignKeyField(
        "models.Broadcast", related_name="versions", on_delete=fields.CASCADE)
    version = fields.IntField()
    definition: dict[str, Any] = fields.JSONField()  # the fields as they were at this version
    status = fields.CharField(max_length=16)
    created_at = fields.DatetimeField(auto_now_add=True)
    created_by = fields.CharField(max_length=80)

    class Meta:
        table = "broadcast_version"
        unique_together = (("broadcast", "version"),)


class WardQuietHours(Model):
    """A ward's quiet hours: normal broadcasts that start inside them do not play there."""

    ward = fields.CharField(max_length=80, primary_key=True)
    start = fields.CharField(max_length=5)  # HH:MM local
    end = fields.CharField(max_length=5)  # HH:MM local; before start: the hours cross midnight
    updated_at = fields.DatetimeField(auto_now=True)
    updated_by = fields.CharField(max_length=80)

    class Meta:
        table = "broadcast_quiet_hours"


# -- delivery, receipts, clocks (docs/broadcasts.md, "Delivery", "Receipts", "Clock offsets") -------


class SpeakerDelivery(Model):
    """One per speaker: the `speaker` document computed for it and where it stands on the device."""

    device_id = fields.CharField(max_length=64, primary_key=True)
    doc: dict[str, Any] | None = fields.JSONField(null=True)  # the last computed `speaker` document
    doc_sha256 = fields.CharField(max_length=64, default="")  # of its canonical JSON: "is it the same?"
    sent_version: int | None = fields.IntField(null=True)  # the desired_version it went out as
    sent_at = fields.DatetimeField(null=True)
    applied_version: int | None = fields.IntField(null=True)  # the newest version the node reported applied
    unsent = fields.BooleanField(default=False)  # computed but not published (broker down): sent when it is back
    due_at = fields.DatetimeField(null=True, db_index=True)  # recompute at or after this (null: when nudged)
    reason = fields.CharField(max_length=64, default="")  # why it was last recomputed (created, edited, birth, …)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "broadcast_speaker_delivery"


class ReceiptState(StrEnum):
    PENDING = "pending"  # in a document that went out; not applied yet
    DELIVERED = "delivered"  # the node reported applied a document version holding the entry
    CLIP_READY = "clip_ready"  # its clip_fetch answered ok
    STARTED = "started"  # playback start
    COMPLETED = "completed"
    FAILED = "failed"  # with the node's reason
    MISSED = "missed"  # the node's `missed`, or no start within the late-start bound while online
    NOT_DELIVERED = "not_delivered"  # the occurrence passed and the node never applied it
    SKIPPED = "skipped"  # lost a conflict (reason names the winner) or quiet hours


# a receipt only moves forward in this order (receipts.advance); the last four are final
RECEIPT_RANK = {ReceiptState.PENDING: 0, ReceiptState.DELIVERED: 1, ReceiptState.CLIP_READY: 2,
                ReceiptState.STARTED: 3, ReceiptState.COMPLETED: 4, ReceiptState.FAILED: 4,
                ReceiptState.MISSED: 4, ReceiptState.NOT_DELIVERED: 4, ReceiptState.SKIPPED: 4}


class BroadcastReceipt(Model):
    """One speaker, one occurrence of a broadcast: what happened to it there."""

    id = fields.BigIntField(primary_key=True)
    broadcast: fields.ForeignKeyRelation[Broadcast] = fields.ForeignKeyField(
        "models.Broadcast", related_name="receipts", on_delete=fields.CASCADE)
    device_id = fields.CharField(max_length=64, db_index=True)
    entry_id = fields.CharField(max_length=32)  # b<broadcast id>.<occurrence start, Unix s>
    occurrence_at = fields.DatetimeField(db_index=True)  # the scheduled start (UTC)
    version = fields.IntField()  # the broadcast's version this speaker was given
    state = fields.CharEnumField(ReceiptState, max_length=16, default=ReceiptState.PENDING, db_index=True)
    reason = fields.CharField(max_length=200, null=True)  # failed/missed/skipped/not_delivered: why
    emergency = fields.BooleanField(default=False)
    delivered_at = fields.DatetimeField(null=True)
    clip_ready_at = fields.DatetimeField(null=True)
    started_at = fields.DatetimeField(null=True)  # the node's time, corrected by its clock offset
    ended_at = fields.DatetimeField(null=True)
    device_started_ms: int | None = fields.BigIntField(null=True)  # the node's own stamp, uncorrected
    offset_ms: int | None = fields.IntField(null=True)  # the node's clock offset used for the correction
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "broadcast_receipt"
        unique_together = (("entry_id", "device_id"),)


class SpeakerClip(Model):
    """A clip a speaker has been asked to hold (speaker.clip_fetch) and what it answered."""

    id = fields.BigIntField(primary_key=True)
    device_id = fields.CharField(max_length=64, db_index=True)
    name = fields.CharField(max_length=32)  # "c" + the first 24 hex digits of the variant's SHA-256
    sha256 = fields.CharField(max_length=64)
    bytes = fields.BigIntField()
    state = fields.CharField(max_length=16, default="wanted")  # wanted | sent | ready | failed
    command_id = fields.CharField(max_length=64, null=True)  # the clip_fetch in flight
    attempts = fields.IntField(default=0)
    next_try_at = fields.DatetimeField(null=True, db_index=True)
    reason = fields.CharField(max_length=200, null=True)  # the node's answer when it failed
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "broadcast_speaker_clip"
        unique_together = (("device_id", "name"),)


class EmergencyDispatch(Model):
    """An emergency's immediate command to one speaker. The document builder leaves the emergency's
    entry out of a speaker's document while its dispatch is `waiting_clip` (the command follows the
    clip), `sent` or `acked`, or `cancelled`, and puts it in once it is `fallback` (or when the speaker
    has no dispatch row: it was not targeted when the emergency started): never both (a node given
    both would play twice). fleet/broadcast/emergency.py makes and moves these rows; every one is
    made in the transaction that creates the broadcast."""

    id = fields.BigIntField(primary_key=True)
    broadcast: fields.ForeignKeyRelation[Broadcast] = fields.ForeignKeyField(
        "models.Broadcast", related_name="dispatches", on_delete=fields.CASCADE)
    device_id = fields.CharField(max_length=64, db_index=True)
    command_id = fields.CharField(max_length=64, null=True)
    state = fields.CharField(max_length=16, default="waiting_clip")  # waiting_clip, sent, acked, fallback, cancelled
    expires_at = fields.DatetimeField(null=True)  # the command's expiry: no answer by then → fallback
    sent_at = fields.DatetimeField(null=True)
    acked_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "broadcast_emergency_dispatch"
        unique_together = (("broadcast", "device_id"),)


class WardVolume(Model):
    """A ward's speaker volume by time of day: [{"from": "HH:MM", "volume": 0..100}, …], the entry
    in force at a local time is the last whose `from` is at or before it (wrapping to the last)."""

    ward = fields.CharField(max_length=80, primary_key=True)
    steps: list[dict[str, Any]] = fields.JSONField()
    updated_at = fields.DatetimeField(auto_now=True)
    updated_by = fields.CharField(max_length=80)

    class Meta:
        table = "broadcast_ward_volume"


class DeviceClock(Model):
    """A speaker's clock offset from the fleet's, estimated from its messages' `ts`."""

    device_id = fields.CharField(max_length=64, primary_key=True)
    offset_ms: int | None = fields.IntField(null=True)  # device clock minus fleet clock (estimate)
    samples: list[int] = fields.JSONField(default=list)  # the last 20 `ts − arrival` values, ms
    flagged = fields.BooleanField(default=False)  # |offset| above FLEET_CLOCK_OFFSET_MAX_MS
    set_time_at = fields.DatetimeField(null=True)  # the last set_time sent for it
    set_time_skew_ms: int | None = fields.IntField(null=True)  # its answer's skew_ms
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "broadcast_device_clock"
