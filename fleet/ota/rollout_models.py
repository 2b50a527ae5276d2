"""What the fleet stores about rollouts (Tortoise ORM; app label "models"). Pure storage: the
engine is fleet/ota/rollouts.py, the rules fleet/ota/gate.py, windows.py and states.py
(docs/ota.md "Rollouts", docs/fleet.md "Rollouts")."""

from typing import Any

from tortoise import fields
from tortoise.models import Model

from fleet.ota.models import Release
from fleet.ota.states import DeviceState, RolloutStatus
from fleet.ota.windows import DEFAULT_TIMEZONE


class Rollout(Model):
    """One release going to a target, phase by phase."""

    id = fields.IntField(primary_key=True)
    release: fields.ForeignKeyRelation[Release] = fields.ForeignKeyField(
        "models.Release", related_name="rollouts", on_delete=fields.RESTRICT)
    release_id: int
    release_name = fields.CharField(max_length=64, db_index=True)  # what ota/progress echoes
    # {"kind", "roles", "wards", "sites", "tags", "devices"} as asked; the devices it chose are rows
    target: dict[str, Any] = fields.JSONField()
    total = fields.IntField()  # devices targeted
    phases: list[float] = fields.JSONField()  # cumulative percentages, e.g. [1, 10, 50, 100]
    sizes: list[int] = fields.JSONField()  # cumulative device counts of the phases (fleet.ota.gate.phase_sizes)
    phase = fields.IntField(default=0)  # the current phase's index
    phase_started_at = fields.DatetimeField(null=True)
    soak_started_at = fields.DatetimeField(null=True)  # every device of the phase had finished
    # a resume: failures and the gate count only what happened after it (docs/fleet.md "Rollouts")
    judged_from = fields.DatetimeField(null=True)
    status = fields.CharEnumField(RolloutStatus, max_length=16, default=RolloutStatus.RUNNING, db_index=True)
    # why it paused: {"figure", "devices", "before", "after", …} (bounded: at most 20 devices)
    pause_reason: dict[str, Any] | None = fields.JSONField(null=True)
    soak_s = fields.FloatField()
    max_failure_pct = fields.FloatField()
    online_within_s = fields.IntField()
    offer_timeout_s = fields.IntField()
    max_boots = fields.IntField()
    tolerance_pct = fields.FloatField()
    offers_per_min = fields.IntField()
    windows: dict[str, str] = fields.JSONField(default=dict)  # {"light": "08:00-17:00", "camera": "not 07:00-09:00"}
    timezone = fields.CharField(max_length=64, default=DEFAULT_TIMEZONE)
    created_by = fields.CharField(max_length=80)
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)
    updated_at = fields.DatetimeField(auto_now=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "ota_rollout"


class RolloutDevice(Model):
    """One targeted device in a rollout: its place in the order, its phase, its state."""

    id = fields.BigIntField(primary_key=True)
    rollout: fields.ForeignKeyRelation[Rollout] = fields.ForeignKeyField(
        "models.Rollout", related_name="devices", on_delete=fields.CASCADE)
    rollout_id: int
    device_id = fields.CharField(max_length=63, db_index=True)
    rank = fields.IntField()  # 0-based place in the rollout's stable order (fleet.ota.gate.rank_key)
    phase = fields.IntField()  # the first phase that holds it
    window = fields.CharField(max_length=200, default="")  # the window keys that apply (fleet.ota.windows)
    state = fields.CharEnumField(DeviceState, max_length=16, default=DeviceState.PENDING)
    reason = fields.CharField(max_length=200, null=True)  # the device's `code: msg`, or the fleet's
    pct = fields.IntField(null=True)  # the last `downloading` percentage
    action = fields.CharField(max_length=16, default="install")  # install | rollback (the last offer's)
    offer_id = fields.CharField(max_length=64, null=True)
    offer_live = fields.BooleanField(default=False, db_index=True)  # a retained offer stands on the broker
    offered_at = fields.DatetimeField(null=True)
    reported_at = fields.DatetimeField(null=True)  # the last report (or the offer): for the timeouts
    done_at = fields.DatetimeField(null=True)  # reached confirmed, failed or rolled_back
    boots_before = fields.BigIntField(null=True)  # the birth's boot.n when offered
    before: dict[str, float] | None = fields.JSONField(null=True)  # health figures before the update (set by the gate)
    after: dict[str, float] | None = fields.JSONField(null=True)  # ... and after it
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "ota_rollout_device"
        unique_together = (("rollout", "device_id"),)
        indexes = (("rollout", "state", "phase", "rank"), ("rollout", "offered_at"))
