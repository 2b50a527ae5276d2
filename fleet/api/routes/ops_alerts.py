"""Alerts and alert rules (/api/ops/alerts, /api/ops/rules; docs/ops.md, "Alert rules"). Reading needs
`read`; acknowledging, silencing, resolving and changing rules need `alerts`. The rules are in
fleet/ops/alerts.py and fleet/ops/rules.py; this module translates their refusals: AlertNotFound
404, AlertError 409, RuleError (unknown kind, bad params) 422."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from contract import DEVICE_ID_PATTERN
from contract.names import ROLE_NAME_PATTERN
from fleet.api.deps import LOGGED_IN, Auditor, Reader, RowId, acting
from fleet.api.errors import answer
from fleet.auth.roles import Permission
from fleet.ops import alerts
from fleet.ops.models import Alert, AlertRule, AlertState, Severity
from fleet.ops.rules import KINDS, RuleError, check_params

router = APIRouter(prefix="/api/ops", tags=["alerts"], dependencies=[LOGGED_IN])

Limit = Annotated[int, Query(ge=1, le=alerts.PAGE_MAX)]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]
Changer = Annotated[Auditor, acting(Permission.ALERTS)]
KIND_NAMES = ", ".join(KINDS)


class AlertPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    rule_id: int
    kind: str
    device_id: str
    device_kind: str | None
    ward: str
    severity: Severity
    state: AlertState
    summary: str
    value: Any
    raised_at: datetime
    last_true_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    silenced_until: datetime | None
    silenced_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None = Field(description="who resolved it; null while open or when the rule found it cleared")
    count: int = Field(description="times the condition came back soon after clearing (re-raised)")


class AlertEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    action: str
    actor: str = Field(description="a username; empty for the rule engine")
    detail: Any
    notify: str


class AlertDetail(AlertPublic):
    events: list[AlertEventPublic]


class AlertPage(BaseModel):
    items: list[AlertPublic]
    total: int


class GroupPublic(BaseModel):
    key: str = Field(description="the ward (empty: none) or the device id")
    live: int
    open: int
    acknowledged: int
    worst: Severity
    by_severity: dict[str, int]


class GroupPage(BaseModel):
    items: list[GroupPublic]
    total: int


class SilenceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: AwareDatetime = Field(description="when the silence ends (with a time zone), at most 30 days ahead")


class RulePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    device_kind: str | None
    role: str | None
    ward: str | None
    severity: Severity
    params: dict[str, Any]
    enabled: bool
    channels: list[str]
    builtin: bool
    created_at: datetime
    updated_at: datetime
    updated_by: str


class RulePage(BaseModel):
    items: list[RulePublic]
    total: int


Name = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[^\x00-\x1f]+$")]
ChannelName = Annotated[str, Field(min_length=1, max_length=64)]


class _RuleFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_kind: Literal["pi", "esp32"] | None = Field(None, description="null: every kind")
    role: Annotated[str, Field(pattern=f"^{ROLE_NAME_PATTERN}$")] | None = Field(None, description="null: any role")
    ward: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(None, description="null: every ward")
    channels: list[ChannelName] = Field(default_factory=list, max_length=20,
                                        description="notification channels, by name")

    @field_validator("kind", check_fields=False)
    @classmethod
    def known_kind(cls, value: str | None) -> str | None:
        if value is not None and value not in KINDS:
            raise ValueError(f"unknown rule kind; known: {KIND_NAMES}")
        return value


class RuleCreate(_RuleFields):
    name: Name
    kind: str = Field(max_length=32, description=f"one of: {KIND_NAMES}")
    severity: Severity = Severity.MAJOR
    params: dict[str, Any] = Field(default_factory=dict, description="the kind's parameters; the rest take defaults")
    enabled: bool = True

    @model_validator(mode="after")
    def params_fit_kind(self) -> "RuleCreate":
        try:
            self.params = check_params(self.kind, self.params)
        except RuleError as err:
            raise ValueError(str(err)) from None
        return self


class RuleUpdate(_RuleFields):
    name: Name | None = None
    kind: Annotated[str, Field(max_length=32)] | None = None
    severity: Severity | None = None
    params: dict[str, Any] | None = None
    enabled: bool | None = None
    channels: list[ChannelName] | None = Field(None, max_length=20)  # type: ignore[assignment]


def _refused(err: alerts.AlertError) -> HTTPException:
    code = status.HTTP_404_NOT_FOUND if isinstance(err, alerts.AlertNotFound) else status.HTTP_409_CONFLICT
    return HTTPException(code, str(err))


async def _detail(alert_id: int) -> AlertDetail:
    try:
        alert, events = await alerts.get_alert(alert_id)
    except alerts.AlertError as err:
        raise _refused(err) from err
    return AlertDetail.model_validate({**_public(alert).model_dump(),
                                       "events": [AlertEventPublic.model_validate(e) for e in events]})


def _public(alert: Alert) -> AlertPublic:
    return AlertPublic.model_validate(alert)


# -- alerts -----------------------------------------------------------------------------------

@router.get("/alerts")
async def list_alerts(
    _: Reader,
    state: Annotated[Literal["open", "acknowledged", "resolved", "live"] | None,
                     Query(description="live: open or acknowledged")] = None,
    severity: Severity | None = None,
    ward: Annotated[str | None, Query(max_length=80)] = None,
    device: Annotated[str | None, Query(pattern=f"^{DEVICE_ID_PATTERN}$")] = None,
    kind: Annotated[str | None, Query(max_length=32, description=f"a rule kind: {KIND_NAMES}")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> AlertPage:
    """Alerts, newest raised first."""
    if kind is not None and kind not in KINDS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown rule kind; known: {KIND_NAMES}")
    items, total = await alerts.list_alerts(alerts.AlertFilter(state, severity, ward, device, kind), limit, offset)
    return AlertPage(items=[_public(a) for a in items], total=total)


@router.get("/alerts/groups")
async def alert_groups(_: Reader, by: Literal["ward", "device"] = "ward", limit: Limit = 100,
                       offset: Offset = 0) -> GroupPage:
    """Live alerts (open or acknowledged) per ward or per device, the largest groups first."""
    items, total = await alerts.groups(by, limit, offset)
    return GroupPage(items=[GroupPublic(key=g.key, live=g.live, open=g.open, acknowledged=g.acknowledged,
                                        worst=g.worst, by_severity=g.by_severity) for g in items], total=total)


@router.get("/alerts/{alert_id}")
async def get_alert(alert_id: RowId, _: Reader) -> AlertDetail:
    """One alert with its history (at most 500 events, oldest first)."""
    return await _detail(alert_id)


CONFLICT: dict[int | str, dict[str, Any]] = {409: answer("not possible in the alert's state (e.g. it is resolved)")}


async def _change(alert_id: int, action: str, audit: Changer,
                  change: Callable[[int, str, datetime], Awaitable[object]],
                  detail: dict[str, Any] | None = None) -> AlertDetail:
    """One lifecycle step by a person: applied (a 404/409 saying why if it cannot be), audited, shown."""
    try:
        await change(alert_id, audit.actor, datetime.now(UTC))
    except alerts.AlertError as err:
        raise _refused(err) from err
    await audit(action, str(alert_id), detail)
    return await _detail(alert_id)


@router.post("/alerts/{alert_id}/ack", responses=CONFLICT)
async def acknowledge(alert_id: RowId, audit: Changer) -> AlertDetail:
    return await _change(alert_id, "alert.acknowledge", audit, alerts.acknowledge)


@router.post("/alerts/{alert_id}/silence", responses=CONFLICT)
async def silence(alert_id: RowId, body: SilenceBody, audit: Changer) -> AlertDetail:
    now = datetime.now(UTC)
    if body.until <= now:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "until is in the past")
    if body.until - now > alerts.MAX_SILENCE:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"a silence lasts at most {alerts.MAX_SILENCE.days} days")

    async def until(alert_id: int, by: str, now: datetime) -> object:
        return await alerts.silence(alert_id, body.until, by, now)

    return await _change(alert_id, "alert.silence", audit, until, {"until": body.until.isoformat()})


@router.post("/alerts/{alert_id}/unsilence", responses=CONFLICT)
async def unsilence(alert_id: RowId, audit: Changer) -> AlertDetail:
    return await _change(alert_id, "alert.unsilence", audit, alerts.unsilence)


@router.post("/alerts/{alert_id}/resolve", responses=CONFLICT)
async def resolve(alert_id: RowId, audit: Changer) -> AlertDetail:
    """Close the alert by hand; if its condition still holds, the engine raises a new one."""
    return await _change(alert_id, "alert.resolve", audit, alerts.resolve)


# -- rules ------------------------------------------------------------------------------------

@router.get("/rules")
async def list_rules(_: Reader, kind: Annotated[str | None, Query(max_length=32)] = None, limit: Limit = 100,
                     offset: Offset = 0) -> RulePage:
    """Rules by id (builtin ones first: they are created first)."""
    query = AlertRule.all() if kind is None else AlertRule.filter(kind=kind)
    items = await query.order_by("id").offset(offset).limit(limit)
    return RulePage(items=[RulePublic.model_validate(r) for r in items], total=await query.count())


@router.post("/rules", status_code=status.HTTP_201_CREATED, responses={409: answer("a rule with this name exists")})
async def create_rule(body: RuleCreate, audit: Changer) -> RulePublic:
    try:
        rule = await alerts.create_rule(body.model_dump(), audit.actor)
    except RuleError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    except alerts.AlertError as err:
        raise _refused(err) from err
    await audit("alert_rule.create", str(rule.id), {"name": rule.name, "kind": rule.kind})
    return RulePublic.model_validate(rule)


@router.get("/rules/{rule_id}")
async def get_rule(rule_id: RowId, _: Reader) -> RulePublic:
    try:
        return RulePublic.model_validate(await alerts.get_rule(rule_id))
    except alerts.AlertError as err:
        raise _refused(err) from err


@router.patch("/rules/{rule_id}", responses={409: answer("a builtin rule's kind or name, or a name taken")})
async def update_rule(rule_id: RowId, body: RuleUpdate, audit: Changer) -> RulePublic:
    changes = body.model_dump(exclude_unset=True)
    for required in ("name", "kind", "severity", "params", "enabled", "channels"):
        if required in changes and changes[required] is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{required} cannot be null")
    if not changes:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "nothing to update")
    try:
        rule = await alerts.update_rule(rule_id, changes, audit.actor)
    except RuleError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    except alerts.AlertError as err:
        raise _refused(err) from err
    await audit("alert_rule.update", str(rule_id), {k: v for k, v in changes.items() if k != "params"})
    return RulePublic.model_validate(rule)


@router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={409: answer("a builtin rule (disable it instead)")})
async def delete_rule(rule_id: RowId, audit: Changer) -> Response:
    """A rule and its alerts, history included, are deleted; builtin rules cannot be."""
    try:
        await alerts.delete_rule(rule_id, audit.actor)
    except alerts.AlertError as err:
        raise _refused(err) from err
    await audit("alert_rule.delete", str(rule_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)

