"""Tables of child devices: one row per (parent, child) with its presence and last health, and a
short history of its changes (at most HISTORY_KEEP rows per child, the oldest deleted)."""

from typing import Any

from tortoise import fields
from tortoise.models import Model

HISTORY_KEEP = 100  # changes kept per child


class ChildDevice(Model):
    id = fields.BigIntField(primary_key=True)
    parent_id = fields.CharField(max_length=63)
    child_id = fields.CharField(max_length=63)
    kind = fields.CharField(max_length=32, null=True)  # from its birth: ip_camera, conference_endpoint, ...
    fw = fields.CharField(max_length=64, null=True)
    hw = fields.CharField(max_length=200, null=True)
    present = fields.BooleanField(null=True)  # as the parent last said: True birth, False death, None never
    state = fields.CharField(max_length=32, null=True)  # its last health's `state`: ok, frozen, no_frames
    state_since = fields.DatetimeField(null=True)  # when `state` last changed
    last_health: fields.Field[Any] = fields.JSONField(null=True)
    last_health_at = fields.DatetimeField(null=True)
    last_birth_at = fields.DatetimeField(null=True)
    last_death_at = fields.DatetimeField(null=True)
    last_death_reason = fields.CharField(max_length=32, null=True)
    first_seen_at = fields.DatetimeField()
    last_seen_at = fields.DatetimeField()
    # (epoch, ses, seq) of the last message applied: a replayed older one changes nothing
    epoch = fields.IntField(default=0)
    ses = fields.BigIntField(default=0)
    seq = fields.BigIntField(default=-1)

    class Meta:
        table = "child_device"
        unique_together = (("parent_id", "child_id"),)


class ChildChange(Model):
    """A child's birth, death or change of health state, as the fleet applied it."""

    id = fields.BigIntField(primary_key=True)
    parent_id = fields.CharField(max_length=63)
    child_id = fields.CharField(max_length=63)
    at = fields.DatetimeField()
    what = fields.CharField(max_length=16)  # birth, death, state
    detail = fields.CharField(max_length=32, null=True)  # the death's reason, the new state

    class Meta:
        table = "child_change"
        indexes = (("parent_id", "child_id", "at"),)
