"""What the relay stores (docs/relay.md): snapshots by content hash, endpoints, routes and the
delivery outbox. Pure storage."""

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class Snapshot(Model):
    """One image a device uploaded, stored once by its SHA-256 (docs/relay.md, "Snapshots")."""

    sha256 = fields.CharField(primary_key=True, max_length=64)
    bytes = fields.IntField()
    type = fields.CharField(max_length=32, default="image/jpeg")
    device_id = fields.CharField(max_length=63, db_index=True)  # the device that uploaded it first
    received_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "relay_snapshot"


class EndpointKind(StrEnum):
    WEBHOOK = "webhook"
    MQTT = "mqtt"


class RelayEndpoint(Model):
    """Where relayed events go: a webhook URL or a topic on another MQTT broker, with its retry
    settings and its delivery state (docs/relay.md, "Endpoints and delivery")."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    kind = fields.CharEnumField(EndpointKind)
    url = fields.CharField(max_length=500)  # https://… for a webhook; mqtt(s)://host:port for mqtt
    topic = fields.CharField(max_length=200, default="ioc/events/{ward}/{device}/{type}")  # mqtt only
    username = fields.CharField(max_length=120, null=True)  # mqtt only
    password = fields.CharField(max_length=200, null=True)  # mqtt only; never shown back
    ca_pem = fields.TextField(null=True)  # mqtts only: the CA of the IOC broker's certificate
    secret = fields.CharField(max_length=200)  # whsec_…; never shown back after creation/rotation
    previous_secret = fields.CharField(max_length=200, null=True)  # valid until previous_until
    previous_until = fields.DatetimeField(null=True)
    enabled = fields.BooleanField(default=True)
    disabled_reason = fields.CharField(max_length=300, null=True)
    disabled_at = fields.DatetimeField(null=True)
    # settings (docs/relay.md, "Retries, order, and the bounds")
    timeout_s = fields.FloatField(default=10.0)
    retry_base_s = fields.FloatField(default=5.0)
    retry_max_s = fields.FloatField(default=3600.0)
    max_attempts = fields.IntField(default=15)
    gone_limit = fields.IntField(default=2)
    failure_budget = fields.IntField(default=200)
    failure_window_s = fields.FloatField(default=86400.0)
    max_in_flight = fields.IntField(default=32)
    snapshot_wait_s = fields.FloatField(default=10.0)
    # state
    consecutive_failures = fields.IntField(default=0)
    consecutive_gone = fields.IntField(default=0)
    failing_since = fields.DatetimeField(null=True)
    last_success_at = fields.DatetimeField(null=True)
    last_failure_at = fields.DatetimeField(null=True)
    last_error = fields.CharField(max_length=300, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    updated_by = fields.CharField(max_length=80, default="")

    class Meta:
        table = "relay_endpoint"


class RelayRoute(Model):
    """Which events go to an endpoint: each list is "any of", empty is no condition."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    endpoint: fields.ForeignKeyRelation[RelayEndpoint] = fields.ForeignKeyField(
        "models.RelayEndpoint", related_name="routes", on_delete=fields.CASCADE)
    enabled = fields.BooleanField(default=True)
    types: list[str] = fields.JSONField(default=list)
    phases: list[str] = fields.JSONField(default=list)
    categories: list[str] = fields.JSONField(default=list)
    wards: list[str] = fields.JSONField(default=list)
    device_kinds: list[str] = fields.JSONField(default=list)
    tags: list[str] = fields.JSONField(default=list)
    devices: list[str] = fields.JSONField(default=list)
    min_severity = fields.CharField(max_length=16, null=True)  # critical | major | minor | warning | info
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    updated_by = fields.CharField(max_length=80, default="")

    class Meta:
        table = "relay_route"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class RelayDelivery(Model):
    """The outbox: one event message to one endpoint, made in the ingest's transaction."""

    id = fields.BigIntField(primary_key=True)
    endpoint: fields.ForeignKeyRelation[RelayEndpoint] = fields.ForeignKeyField(
        "models.RelayEndpoint", related_name="deliveries", on_delete=fields.CASCADE)
    endpoint_id: int
    device_id = fields.CharField(max_length=63)
    message_id = fields.CharField(max_length=40)  # webhook-id: msg_ + 26 base32 (docs/relay.md)
    payload: dict[str, Any] = fields.JSONField()  # the body without snapshot.url/available
    snapshot_sha256 = fields.CharField(max_length=64, null=True)
    status = fields.CharEnumField(DeliveryStatus, default=DeliveryStatus.PENDING)
    attempts = fields.IntField(default=0)
    next_at = fields.DatetimeField()  # due; while claimed, the end of the claim's lease
    claim = fields.CharField(max_length=32, null=True)  # the run that holds it (fleet/relay/delivery.py)
    created_at = fields.DatetimeField()
    last_attempt_at = fields.DatetimeField(null=True)
    last_status = fields.IntField(null=True)  # HTTP status or MQTT reason code of the last attempt
    last_error = fields.CharField(max_length=300, null=True)
    done_at = fields.DatetimeField(null=True)  # delivered or dead-lettered

    class Meta:
        table = "relay_delivery"
        unique_together = (("endpoint_id", "message_id"),)
        indexes = (("endpoint_id", "status", "device_id", "id"), ("status", "next_at"), ("done_at",))
