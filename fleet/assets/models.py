"""What the fleet knows of an asset and of the devices fitted to it over time. Pure storage."""

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class AssetKind(StrEnum):
    POLE = "pole"  # a street-light pole
    CABINET = "cabinet"  # a street cabinet (a Pi, a hotspot)
    SPEAKER_MAST = "speaker_mast"
    INTERSECTION = "intersection"
    OTHER = "other"


class Asset(Model):
    """A place the city keeps a device at: its history, programs, alerts and reports follow it
    across a swap of the device fitted to it."""

    id = fields.CharField(primary_key=True, max_length=63)  # [a-z0-9][a-z0-9-]{0,62}, e.g. pole-q1-0042
    kind = fields.CharEnumField(AssetKind)
    name = fields.CharField(max_length=120, default="")
    ward = fields.CharField(max_length=80, default="", db_index=True)
    address = fields.CharField(max_length=200, default="")
    latitude = fields.FloatField(null=True)
    longitude = fields.FloatField(null=True)
    # what it carries: lamp_type, lamp_w, speaker_w, ... (free, bounded by the API)
    attributes: dict[str, Any] = fields.JSONField(default=dict)
    device_id = fields.CharField(max_length=63, null=True, unique=True)  # the device fitted now
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    updated_by = fields.CharField(max_length=80, default="")

    class Meta:
        table = "asset"


class Fitting(Model):
    """One device's time on one asset: from fitted to removed (null while it is there)."""

    id = fields.BigIntField(primary_key=True)
    asset_id = fields.CharField(max_length=63, db_index=True)
    device_id = fields.CharField(max_length=63, db_index=True)
    fitted_at = fields.DatetimeField()
    removed_at = fields.DatetimeField(null=True)
    reason = fields.CharField(max_length=32, default="")  # fitted | swap | removed
    by = fields.CharField(max_length=80, default="")

    class Meta:
        table = "asset_fitting"
        indexes = (("asset_id", "fitted_at"),)
