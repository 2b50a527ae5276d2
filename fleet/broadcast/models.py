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
