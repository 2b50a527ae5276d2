"""Request and response bodies: XCreate / XUpdate / XPublic."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract import COMMAND_NAME_MAX, COMMAND_NAME_PATTERN, DEVICE_ID_PATTERN
from fleet.liveness import Reason, State
from fleet.models import DeviceStatus

Kind = Literal["pi", "esp32"]
TAG_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,39}$"
Tag = Annotated[str, Field(pattern=TAG_PATTERN)]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def patch_field(**constraints: Any) -> Any:
    """A field an update may leave out but not set to null (its column is NOT NULL).

    Pydantic needs a default for "may be left out"; the route reads only the fields that were
    sent (`exclude_unset`), and the schema shows no default, so it does not read as nullable.
    """
    return Field(default=None, json_schema_extra=_no_default, **constraints)


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=f"^{DEVICE_ID_PATTERN}$", description="lower-case device id, 2-63 chars")
    kind: Kind
    name: str = Field(default="", max_length=120)
    ward: str = Field(default="", max_length=80)
    site: str = Field(default="", max_length=120)
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class DeviceUpdate(BaseModel):
    """Only the fields sent change; `latitude`/`longitude` may be set to null (position unknown)."""

    model_config = ConfigDict(extra="forbid")
    name: str = patch_field(max_length=120)
    ward: str = patch_field(max_length=80)
    site: str = patch_field(max_length=120)
    tags: list[Tag] = patch_field(max_length=32)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


def _verdict_always_present(schema: dict[str, Any]) -> None:
    """`state` and `state_reason` have defaults only because the route sets them after reading the
    row; every answer carries them."""
    schema.setdefault("required", []).extend(["state", "state_reason"])


class DevicePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra=_verdict_always_present)
    id: str
    kind: str | None
    name: str
    ward: str
    site: str
    tags: list[str]
    latitude: float | None
    longitude: float | None
    status: DeviceStatus
    state: State = Field(default=State.UNKNOWN, description=(
        "the fleet's verdict on the device's connection (docs/fleet.md, \"Liveness\"): online, stale, offline, "
        "unknown (the fleet itself does not hear the broker), never_seen, decommissioned"))
    state_reason: Reason | None = Field(default=None, description=(
        "why: lost or shutdown (its death), silent (nothing heard for its health period x "
        "FLEET_SILENT_AFTER_PERIODS), overdue (stale), fleet_disconnected (unknown); null when online"))
    online: bool = Field(description="the raw presence flag: a birth or a message sets it, a death or the "
                                     "fleet's silent verdict clears it; `state` is what to show")
    session: int | None
    fw: str | None
    roles: list[str]
    last_birth_at: datetime | None
    last_death_at: datetime | None
    last_death_reason: str | None
    last_seen_at: datetime | None = Field(description="the last message the fleet stored from it (a birth or "
                                                      "any numbered message)")
    health_period_s: int = Field(description="the health period the fleet judges it by: its birth's period_s, "
                                             "or what set_health_period or the desired state set since")
    silenced_at: datetime | None = Field(description="when the fleet last judged it silent")
    last_health: dict[str, Any] | None
    last_health_at: datetime | None
    desired_version: int
    reported_version: int | None
    reported_status: str | None
    open_gaps: int = 0
    created_at: datetime
    updated_at: datetime


class HealthPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    ses: int
    seq: int
    device_ts: int | None
    received_at: datetime
    data: dict[str, Any]


class TelemetryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    ses: int
    seq: int
    at: datetime
    device_ts: int | None
    received_at: datetime
    role: str
    readings: dict[str, float]


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    ses: int
    seq: int
    at: datetime
    received_at: datetime
    event_id: str
    type: str
    phase: str
    category: str
    data: dict[str, Any]
    snapshot: dict[str, Any] | None


class GapPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    ses: int
    first_seq: int
    last_seq: int
    open: bool
    detected_at: datetime


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the contract's rule (contract/names.py): `ping`, or a role's own `speaker.clip_fetch`
    name: str = Field(pattern=f"^{COMMAND_NAME_PATTERN}$", max_length=COMMAND_NAME_MAX)
    args: dict[str, Any] = Field(default_factory=dict)
    ttl_s: int = Field(default=300, ge=1, le=7 * 24 * 3600, description="the device must not run it later")


class CommandPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    device_id: str
    name: str
    args: dict[str, Any]
    created_at: datetime
    expires_ms: int
    status: str
    detail: Any
    answered_at: datetime | None


class DesiredUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc: dict[str, Any]


class DesiredPublic(BaseModel):
    version: int
    doc: dict[str, Any] | None
    reported_version: int | None
    reported_status: str | None
