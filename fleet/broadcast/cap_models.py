"""The CAP alerts the fleet imported (Tortoise ORM; app label "models"): each one's draft broadcast and
what became of it (docs/broadcasts.md, "CAP 1.2"). The rules live in cap.py and cap_import.py."""

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class CapState(StrEnum):
    DRAFT = "draft"  # imported, waiting for an operator
    CONFIRMED = "confirmed"  # an operator confirmed it: its broadcast exists (or its Cancel was carried out)
    CANCELLED = "cancelled"  # a later Cancel or Update of the same alert replaced it before it was confirmed
    REFUSED = "refused"  # an operator declined it


class CapAlert(Model):
    id = fields.IntField(primary_key=True)
    identifier = fields.CharField(max_length=200)
    sender = fields.CharField(max_length=200)
    sent = fields.DatetimeField()
    msg_type = fields.CharField(max_length=8)  # Alert | Update | Cancel
    status = fields.CharField(max_length=8)  # Actual (the only one imported)
    document = fields.BinaryField()  # the XML as received, at most cap.DOCUMENT_MAX bytes
    # the draft: the broadcast's definition, what matched, notes, the alerts it updates or cancels
    draft: dict[str, Any] = fields.JSONField()
    state = fields.CharEnumField(CapState, max_length=16, default=CapState.DRAFT, db_index=True)
    reason = fields.CharField(max_length=200, null=True)  # refused or cancelled: why
    broadcast_id: int | None = fields.IntField(null=True, db_index=True)  # the broadcast it made or edited
    created_at = fields.DatetimeField(auto_now_add=True)
    created_by = fields.CharField(max_length=80)
    decided_at = fields.DatetimeField(null=True)
    decided_by = fields.CharField(max_length=80, null=True)

    class Meta:
        table = "broadcast_cap_alert"
        unique_together = (("sender", "identifier"),)
