"""What the fleet stores (Tortoise ORM). Pure storage: the rules live in fleet/ingest and fleet/api."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from fleet.liveness import DEFAULT_PERIOD_S


class DeviceStatus(StrEnum):
    REGISTERED = "registered"  # created through the API, never heard from
    DISCOVERED = "discovered"  # heard from, but never registered
    ACTIVE = "active"  # registered and has sent a birth
    DECOMMISSIONED = "decommissioned"  # retired: its messages are refused
    REPLACED = "replaced"  # swapped out of its asset (docs/assets.md): credentials revoked, messages refused


# a device that is no more in service: its messages, enrollment and commands are refused alike
RETIRED_STATUSES = (DeviceStatus.DECOMMISSIONED, DeviceStatus.REPLACED)


class Device(Model):
    id = fields.CharField(primary_key=True, max_length=63)
    kind = fields.CharField(max_length=16, null=True)  # pi | esp32, from the registry or the birth
    name = fields.CharField(max_length=120, default="")
    ward = fields.CharField(max_length=80, default="", db_index=True)
    site = fields.CharField(max_length=120, default="")
    tags = fields.JSONField(default=list)
    latitude = fields.FloatField(null=True)
    longitude = fields.FloatField(null=True)
    status = fields.CharEnumField(DeviceStatus, default=DeviceStatus.REGISTERED, db_index=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    # presence, from birth and death (docs/protocol.md "Presence")
    online = fields.BooleanField(default=False, db_index=True)
    session = fields.BigIntField(null=True)
    # bumped when the device's session counter goes backwards (its storage was wiped): streams of
    # the new epoch never collide with the old ones (docs/protocol.md, "Streams")
    epoch = fields.IntField(default=0)
    last_birth_at = fields.DatetimeField(null=True)
    last_death_at = fields.DatetimeField(null=True)
    last_death_reason = fields.CharField(max_length=16, null=True)
    ended_session = fields.BigIntField(null=True)  # the session of the last death that counted
    last_seen_at = fields.DatetimeField(null=True)
    # the fleet's own verdict on silence (fleet/liveness.py, docs/fleet.md "Liveness"): last_seen_at
    # in Unix ms and the health period it judges by, so the sweep's arithmetic runs in SQL
    last_seen_ms = fields.BigIntField(null=True)
    health_period_s = fields.BigIntField(default=DEFAULT_PERIOD_S)
    silenced_at = fields.DatetimeField(null=True)  # when the fleet last judged it silent
    fw = fields.CharField(max_length=64, null=True)
    roles = fields.JSONField(default=list)
    birth = fields.JSONField(null=True)  # the last birth certificate, as sent

    last_health = fields.JSONField(null=True)
    last_health_at = fields.DatetimeField(null=True)

    # desired/reported state
    desired_version = fields.IntField(default=0)
    desired_doc = fields.JSONField(null=True)
    reported_version = fields.IntField(null=True)
    reported_status = fields.CharField(max_length=16, null=True)

    class Meta:
        table = "device"


class StreamRecord(Model):
    """What every stored upstream message has: its stamp, and when it arrived."""

    id = fields.BigIntField(primary_key=True)
    device_id = fields.CharField(max_length=63)
    epoch = fields.IntField(default=0)
    ses = fields.BigIntField()
    seq = fields.BigIntField()
    device_ts = fields.BigIntField(null=True)  # device clock, Unix ms; None while unknown
    received_at = fields.DatetimeField()

    class Meta:
        abstract = True


STAMP_KEY = (("device_id", "epoch", "ses", "seq"),)  # one row per message: replays cannot double it


class HealthRecord(StreamRecord):
    data = fields.JSONField()

    class Meta:
        table = "health"
        unique_together = STAMP_KEY
        indexes = (("device_id", "received_at"),)


class TelemetryRecord(StreamRecord):
    # the time the readings stand for: the message's at_ms, else its ts, else its arrival
    # (fleet/ingest/store.py telemetry_at; docs/fleet.md, "Telemetry time")
    at = fields.DatetimeField()
    role = fields.CharField(max_length=32)
    readings = fields.JSONField()

    class Meta:
        table = "telemetry"
        unique_together = STAMP_KEY
        indexes = (("device_id", "at"),)


class EventRecord(StreamRecord):
    at = fields.DatetimeField()
    event_id = fields.CharField(max_length=200)
    type = fields.CharField(max_length=64)
    phase = fields.CharField(max_length=8)
    category = fields.CharField(max_length=16)
    data = fields.JSONField()
    snapshot = fields.JSONField(null=True)

    class Meta:
        table = "event"
        unique_together = STAMP_KEY
        indexes = (("device_id", "at"),)


class SeqStream(Model):
    """The highest `seq` seen in one (device, ses) stream: what dedupe and gap detection need."""

    id = fields.BigIntField(primary_key=True)
    device_id = fields.CharField(max_length=63)
    epoch = fields.IntField(default=0)
    ses = fields.BigIntField()
    max_seq = fields.BigIntField()
    received = fields.BigIntField(default=0)
    duplicates = fields.BigIntField(default=0)
    first_at = fields.DatetimeField()
    last_at = fields.DatetimeField()

    class Meta:
        table = "seq_stream"
        unique_together = (("device_id", "epoch", "ses"),)


class SeqGap(Model):
    """Missing `seq` numbers [first, last] in a stream; shrinks as late messages fill it."""

    id = fields.BigIntField(primary_key=True)
    device_id = fields.CharField(max_length=63, db_index=True)
    epoch = fields.IntField(default=0)
    ses = fields.BigIntField()
    first_seq = fields.BigIntField()
    last_seq = fields.BigIntField()
    detected_at = fields.DatetimeField()
    open = fields.BooleanField(default=True)

    class Meta:
        table = "seq_gap"
        indexes = (("device_id", "epoch", "ses", "open"),)


class Command(Model):
    id = fields.CharField(primary_key=True, max_length=64)
    device_id = fields.CharField(max_length=63, db_index=True)
    name = fields.CharField(max_length=64)
    args = fields.JSONField()
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_ms = fields.BigIntField()
    status = fields.CharField(max_length=16, default="sent")  # sent | ok | error | expired | unknown
    detail = fields.JSONField(null=True)
    answered_at = fields.DatetimeField(null=True)

    class Meta:
        table = "command"


class RejectedMessage(Model):
    """A bounded record of recent refused messages, for ops to see what is sending garbage."""

    id = fields.BigIntField(primary_key=True)
    at = fields.DatetimeField()
    topic = fields.CharField(max_length=256)
    reason = fields.CharField(max_length=32)
    detail = fields.CharField(max_length=300)
    size = fields.IntField()

    class Meta:
        table = "rejected_message"


class User(Model):
    id = fields.IntField(primary_key=True)
    username = fields.CharField(max_length=64, unique=True)
    full_name = fields.CharField(max_length=120, default="")
    password_hash = fields.CharField(max_length=200)
    role = fields.CharField(max_length=16)  # fleet.auth.roles.Role
    disabled = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "app_user"


class ApiToken(Model):
    """A bearer token: a login session (kind 'session') or a long-lived tool token (kind 'api')."""

    id = fields.IntField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="tokens")
    token_hash = fields.CharField(max_length=64, unique=True)
    kind = fields.CharField(max_length=8)
    name = fields.CharField(max_length=80, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    last_used_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_token"


class AuditEntry(Model):
    id = fields.BigIntField(primary_key=True)
    at = fields.DatetimeField(auto_now_add=True, db_index=True)
    actor = fields.CharField(max_length=80)  # a username, or "device:<id>" / "enrollment"
    action = fields.CharField(max_length=64)
    target = fields.CharField(max_length=200, default="")
    detail = fields.JSONField(null=True)
    source = fields.CharField(max_length=64, default="")  # the client's address

    class Meta:
        table = "audit"


class EnrollmentToken(Model):
    """Single use, expiring, bound to a device kind and site (and optionally to one device id)."""

    id = fields.IntField(primary_key=True)
    token_hash = fields.CharField(max_length=64, unique=True)
    kind = fields.CharField(max_length=16)
    site = fields.CharField(max_length=120)
    ward = fields.CharField(max_length=80, default="")
    device_id = fields.CharField(max_length=63, null=True)
    created_by = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    used_by_device = fields.CharField(max_length=63, null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "enrollment_token"


class DeviceCredential(Model):
    """A device's MQTT password, as a hash. At most one is live per device."""

    id = fields.IntField(primary_key=True)
    device_id = fields.CharField(max_length=63, db_index=True)
    secret_hash = fields.CharField(max_length=200)
    created_at = fields.DatetimeField(auto_now_add=True)
    created_by = fields.CharField(max_length=80)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "device_credential"


class Lease(Model):
    """A job only one fleet instance runs at a time (fleet/lease.py): held by `holder` until `until`,
    renewed by it every turn; taken by another instance once `until` has passed."""

    name = fields.CharField(primary_key=True, max_length=64)
    holder = fields.CharField(max_length=128)
    until = fields.DatetimeField()

    class Meta:
        table = "fleet_lease"
