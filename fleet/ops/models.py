"""What ops monitoring stores (docs/ops.md): presence changes, alert rules and alerts with their
history, notification channels and their outbox, hourly aggregates. Pure storage."""

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class PresenceChange(Model):
    """One change of a device's presence as the fleet recorded it: for flapping and history."""

    id = fields.BigIntField(primary_key=True)
    device_id = fields.CharField(max_length=63)
    at = fields.DatetimeField()
    online = fields.BooleanField()
    reason = fields.CharField(max_length=32, null=True)  # birth | lost | shutdown | silent | resumed

    class Meta:
        table = "ops_presence_change"
        indexes = (("device_id", "at"), ("at",))  # ("at",): the whole fleet's counts since a time


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"


SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.MAJOR: 1, Severity.MINOR: 2, Severity.WARNING: 3}


class AlertRule(Model):
    """A rule as data: what it watches (`kind`, fleet/ops/rules.py), on which devices (`device_kind`,
    `role`, `ward`: null is any), with its parameters, severity and where it notifies."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=80, unique=True)
    kind = fields.CharField(max_length=32)
    device_kind = fields.CharField(max_length=16, null=True)
    role = fields.CharField(max_length=32, null=True)
    ward = fields.CharField(max_length=80, null=True)
    severity = fields.CharEnumField(Severity, default=Severity.MAJOR)
    params: dict[str, Any] = fields.JSONField(default=dict)
    enabled = fields.BooleanField(default=True)
    channels: list[str] = fields.JSONField(default=list)  # NotificationChannel names
    builtin = fields.BooleanField(default=False)  # one of the defaults: may be edited, not deleted
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    updated_by = fields.CharField(max_length=80, default="")

    class Meta:
        table = "ops_alert_rule"


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(Model):
    """One rule firing on one device, from raised to resolved. At most one not resolved per
    (rule, device): `live_key` is "<rule id>:<device id>" while it is not resolved, else null."""

    id = fields.BigIntField(primary_key=True)
    rule: fields.ForeignKeyRelation[AlertRule] = fields.ForeignKeyField(
        "models.AlertRule", related_name="alerts", on_delete=fields.CASCADE)
    kind = fields.CharField(max_length=32)  # the rule's kind when raised
    device_id = fields.CharField(max_length=63, db_index=True)
    device_kind = fields.CharField(max_length=16, null=True)
    ward = fields.CharField(max_length=80, default="", db_index=True)
    severity = fields.CharEnumField(Severity)
    state = fields.CharEnumField(AlertState, default=AlertState.OPEN, db_index=True)
    live_key = fields.CharField(max_length=100, null=True, unique=True)
    summary = fields.CharField(max_length=300)
    value: Any = fields.JSONField(null=True)  # the figures that made it fire (last seen)
    raised_at = fields.DatetimeField(db_index=True)
    last_true_at = fields.DatetimeField()  # the last evaluation that found the condition true
    acknowledged_at = fields.DatetimeField(null=True)
    acknowledged_by = fields.CharField(max_length=80, null=True)
    silenced_until = fields.DatetimeField(null=True, db_index=True)  # the engine ends silences that ran out
    silenced_by = fields.CharField(max_length=80, null=True)
    resolved_at = fields.DatetimeField(null=True)
    resolved_by = fields.CharField(max_length=80, null=True)  # null: the rule found it cleared
    count = fields.IntField(default=1)  # times the condition came back while it stayed open (flaps)

    class Meta:
        table = "ops_alert"
        indexes = (("state", "severity"), ("ward", "state"))


class AlertEvent(Model):
    """The history of an alert: raised, acknowledged, silenced, unsilenced, resolved, reopened.
    `notify` is "pending" for a change the notifier still has to route, else "done" or "none"."""

    id = fields.BigIntField(primary_key=True)
    alert: fields.ForeignKeyRelation[Alert] = fields.ForeignKeyField(
        "models.Alert", related_name="events", on_delete=fields.CASCADE)
    at = fields.DatetimeField(db_index=True)
    action = fields.CharField(max_length=16)
    actor = fields.CharField(max_length=80, default="")  # a username; "" for the rule engine
    detail: Any = fields.JSONField(null=True)
    notify = fields.CharField(max_length=8, default="none", db_index=True)

    class Meta:
        table = "ops_alert_event"


class NotificationChannel(Model):
    """Where alerts go: a signed webhook or e-mail over SMTP, with its own rate limit and digest."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    kind = fields.CharField(max_length=8)  # webhook | email
    target: dict[str, Any] = fields.JSONField()  # webhook: {"url"}; email: {"to": [...]}
    secret = fields.CharField(max_length=200, null=True)  # webhook signing secret (never shown back)
    min_severity = fields.CharEnumField(Severity, default=Severity.WARNING)
    rate_per_hour = fields.IntField(default=20)
    enabled = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_by = fields.CharField(max_length=80, default="")

    class Meta:
        table = "ops_notification_channel"


class Notification(Model):
    """The outbox: one message to one channel (one alert change, or a digest of many)."""

    id = fields.BigIntField(primary_key=True)
    channel: fields.ForeignKeyRelation[NotificationChannel] = fields.ForeignKeyField(
        "models.NotificationChannel", related_name="notifications", on_delete=fields.CASCADE)
    event_ids: list[int] = fields.JSONField(default=list)  # the AlertEvent ids it carries
    digest = fields.BooleanField(default=False)
    state = fields.CharField(max_length=8, default="pending", db_index=True)  # pending | sent | failed
    attempts = fields.IntField(default=0)
    next_try_at = fields.DatetimeField(null=True, db_index=True)
    created_at = fields.DatetimeField()
    sent_at = fields.DatetimeField(null=True)
    last_error = fields.CharField(max_length=300, null=True)

    class Meta:
        table = "ops_notification"


class HealthHourly(Model):
    """A device's health figures over one hour: per numeric field its min, max, mean and count."""

    id = fields.BigIntField(primary_key=True)
    device_id = fields.CharField(max_length=63)
    hour = fields.DatetimeField()  # the hour's start (UTC)
    # {"temp_c": {"min", "max", "mean", "n"}, "roles.camera.fps": {...}}
    figures: dict[str, dict[str, float]] = fields.JSONField()
    messages = fields.IntField()

    class Meta:
        table = "ops_health_hourly"
        unique_together = (("device_id", "hour"),)
        indexes = (("hour",),)  # retention deletes by hour over all devices


class TelemetryHourly(Model):
    """A device role's telemetry over one hour: per reading its min, max, mean and count."""

    id = fields.BigIntField(primary_key=True)
    device_id = fields.CharField(max_length=63)
    role = fields.CharField(max_length=32)
    hour = fields.DatetimeField()
    figures: dict[str, dict[str, float]] = fields.JSONField()
    messages = fields.IntField()

    class Meta:
        table = "ops_telemetry_hourly"
        unique_together = (("device_id", "role", "hour"),)
        indexes = (("hour",),)  # retention deletes by hour over all devices
