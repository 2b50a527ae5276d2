"""What people do with alerts and rules (docs/ops.md, "Alert rules"): acknowledge, silence, unsilence,
resolve; list and group alerts; create, change and delete rules. The API (fleet/api/routes/ops_alerts.py)
and the alert pages call these. Every change of an alert writes an AlertEvent; a refusal raises
AlertError (the API answers 409) or AlertNotFound (404), with a sentence saying why.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from tortoise.exceptions import IntegrityError
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from fleet.ops.models import (
    SEVERITY_RANK,
    Alert,
    AlertEvent,
    AlertRule,
    AlertState,
    NotificationChannel,
    Severity,
)
from fleet.ops.rules import BUILTINS, RuleError, check_params, default_params, kind_of

MAX_SILENCE = timedelta(days=30)
LIVE = [AlertState.OPEN, AlertState.ACKNOWLEDGED]  # not resolved: live_key is set (state is indexed)
PAGE_MAX = 500


class AlertError(Exception):
    """A change that cannot be made now (a resolved alert acknowledged, a builtin rule deleted)."""


class AlertNotFound(AlertError):
    pass


def live_key_of(rule_id: int, device_id: str) -> str:
    return f"{rule_id}:{device_id}"


def silenced(alert: Alert, now: datetime) -> bool:
    return alert.silenced_until is not None and alert.silenced_until > now


async def record(alert: Alert, action: str, actor: str, now: datetime, detail: Any = None, *,
                 engine: bool = False) -> AlertEvent:
    """One line of an alert's history. The engine's raised, reraised and resolved wait for the
    notifier ("pending") unless the alert is silenced; people's changes are not notified."""
    pending = engine and action in ("raised", "reraised", "resolved") and not silenced(alert, now)
    return await AlertEvent.create(alert_id=alert.id, at=now, action=action, actor=actor, detail=detail,
                                   notify="pending" if pending else "none")


async def _locked(alert_id: int, conn: Any) -> Alert:
    alert = await Alert.select_for_update().using_db(conn).get_or_none(id=alert_id)
    if alert is None:
        raise AlertNotFound(f"no alert {alert_id}")
    return alert


async def acknowledge(alert_id: int, by: str, now: datetime) -> Alert:
    async with in_transaction() as conn:
        alert = await _locked(alert_id, conn)
        if alert.state == AlertState.RESOLVED:
            raise AlertError(f"alert {alert_id} is resolved; there is nothing to acknowledge")
        if alert.state == AlertState.ACKNOWLEDGED:
            raise AlertError(f"alert {alert_id} was already acknowledged by {alert.acknowledged_by}")
        alert.state, alert.acknowledged_at, alert.acknowledged_by = AlertState.ACKNOWLEDGED, now, by
        await alert.save(using_db=conn, update_fields=["state", "acknowledged_at", "acknowledged_by"])
        await AlertEvent.create(using_db=conn, alert_id=alert.id, at=now, action="acknowledged", actor=by)
    return alert


async def silence(alert_id: int, until: datetime, by: str, now: datetime) -> Alert:
    if until.tzinfo is None:
        raise AlertError("the silence's end needs a time zone (e.g. 2026-01-01T08:00:00Z)")
    if until <= now:
        raise AlertError("the silence's end is in the past")
    if until - now > MAX_SILENCE:
        raise AlertError(f"a silence lasts at most {MAX_SILENCE.days} days")
    async with in_transaction() as conn:
        alert = await _locked(alert_id, conn)
        if alert.state == AlertState.RESOLVED:
            raise AlertError(f"alert {alert_id} is resolved; a resolved alert cannot be silenced")
        alert.silenced_until, alert.silenced_by = until, by
        await alert.save(using_db=conn, update_fields=["silenced_until", "silenced_by"])
        await AlertEvent.create(using_db=conn, alert_id=alert.id, at=now, action="silenced", actor=by,
                                detail={"until": until.isoformat()})
    return alert


async def unsilence(alert_id: int, by: str, now: datetime) -> Alert:
    async with in_transaction() as conn:
        alert = await _locked(alert_id, conn)
        if not silenced(alert, now):
            raise AlertError(f"alert {alert_id} is not silenced")
        alert.silenced_until, alert.silenced_by = None, None
        await alert.save(using_db=conn, update_fields=["silenced_until", "silenced_by"])
        await AlertEvent.create(using_db=conn, alert_id=alert.id, at=now, action="unsilenced", actor=by)
    return alert


async def resolve(alert_id: int, by: str, now: datetime) -> Alert:
    """A person closes the alert. If its condition still holds, the engine raises a new one."""
    async with in_transaction() as conn:
        alert = await _locked(alert_id, conn)
        if alert.state == AlertState.RESOLVED:
            raise AlertError(f"alert {alert_id} is already resolved")
        alert.state, alert.live_key, alert.resolved_at, alert.resolved_by = AlertState.RESOLVED, None, now, by
        await alert.save(using_db=conn, update_fields=["state", "live_key", "resolved_at", "resolved_by"])
        await AlertEvent.create(using_db=conn, alert_id=alert.id, at=now, action="resolved", actor=by)
    return alert


# -- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AlertFilter:
    state: Literal["open", "acknowledged", "resolved", "live"] | None = None  # live: open or acknowledged
    severity: Severity | None = None
    ward: str | None = None
    device: str | None = None
    kind: str | None = None


async def list_alerts(where: AlertFilter, limit: int = 100, offset: int = 0) -> tuple[list[Alert], int]:
    """A page of alerts, newest raised first, and how many match in all."""
    query = Alert.all()
    if where.state == "live":
        query = query.filter(state__in=LIVE)
    elif where.state is not None:
        query = query.filter(state=where.state)
    if where.severity is not None:
        query = query.filter(severity=where.severity)
    if where.ward is not None:
        query = query.filter(ward=where.ward)
    if where.device is not None:
        query = query.filter(device_id=where.device)
    if where.kind is not None:
        query = query.filter(kind=where.kind)
    items = await query.order_by("-raised_at", "-id").offset(offset).limit(min(limit, PAGE_MAX))
    return items, await query.count()


async def get_alert(alert_id: int) -> tuple[Alert, list[AlertEvent]]:
    alert = await Alert.get_or_none(id=alert_id)
    if alert is None:
        raise AlertNotFound(f"no alert {alert_id}")
    events = await AlertEvent.filter(alert_id=alert_id).order_by("at", "id").limit(PAGE_MAX)
    return alert, events


@dataclass(frozen=True, slots=True)
class Group:
    key: str  # the ward ("" for none) or the device id
    live: int  # open + acknowledged
    open: int
    acknowledged: int
    worst: Severity
    by_severity: dict[str, int]


async def groups(by: Literal["ward", "device"], limit: int = 100, offset: int = 0) -> tuple[list[Group], int]:
    """Live alerts grouped per ward or per device, the groups with most alerts first."""
    field = "ward" if by == "ward" else "device_id"
    live = Alert.filter(state__in=LIVE)
    page = await (live.annotate(n=Count("id")).group_by(field).order_by("-n", field)
                  .offset(offset).limit(min(limit, PAGE_MAX)).values_list(field, "n"))
    counted: list[Any] = await live.annotate(groups=Count(field, distinct=True)).values_list("groups", flat=True)
    total = int(counted[0]) if counted else 0
    keys = [str(k) for k, _ in page]
    if not keys:
        return [], total
    rows = await (live.filter(**{f"{field}__in": keys}).annotate(n=Count("id"))
                  .group_by(field, "state", "severity").values_list(field, "state", "severity", "n"))
    found: dict[str, dict[str, Any]] = {k: {"open": 0, "acknowledged": 0, "by_severity": {}} for k in keys}
    for key, state, severity, n in rows:
        entry = found[str(key)]
        entry[str(state)] = entry.get(str(state), 0) + int(n)
        entry["by_severity"][str(severity)] = entry["by_severity"].get(str(severity), 0) + int(n)
    result = []
    for key, n in page:
        entry = found[str(key)]
        worst = min((Severity(s) for s in entry["by_severity"]), key=lambda s: SEVERITY_RANK[s])
        result.append(Group(str(key), int(n), entry["open"], entry["acknowledged"], worst, entry["by_severity"]))
    return result, total


# -- rules -----------------------------------------------------------------------------------

async def ensure_builtin_rules() -> int:
    """The builtin rules that are missing, created by name (a builtin someone changed is left as
    it is); safe to run on every start of every instance. Returns how many were created."""
    named: list[Any] = await AlertRule.filter(name__in=[b.name for b in BUILTINS]).values_list("name", flat=True)
    existing = {str(n) for n in named}
    created = 0
    for builtin in BUILTINS:
        if builtin.name in existing:
            continue
        try:
            await AlertRule.create(name=builtin.name, kind=builtin.kind, device_kind=builtin.device_kind,
                                   role=builtin.role, severity=Severity(builtin.severity),
                                   params=default_params(builtin.kind), builtin=True, updated_by="builtin")
            created += 1
        except IntegrityError:
            pass  # another instance created it at the same moment
    return created


RULE_FIELDS = ("name", "kind", "device_kind", "role", "ward", "severity", "params", "enabled", "channels")


async def _check_channels(names: Any) -> None:
    """Every channel a rule names exists (RuleError naming the first few that do not)."""
    if not names:
        return
    wanted = {str(n) for n in names}
    known: list[Any] = await NotificationChannel.filter(name__in=sorted(wanted)).values_list("name", flat=True)
    missing = sorted(wanted - {str(n) for n in known})
    if missing:
        raise RuleError(f"no notification channel named {', '.join(repr(m[:64]) for m in missing[:3])}")


async def create_rule(values: Mapping[str, Any], by: str) -> AlertRule:
    """A new rule; its params are checked against its kind (RuleError) and completed with defaults,
    its channels must exist (RuleError)."""
    fields = {k: v for k, v in values.items() if k in RULE_FIELDS}
    kind_of(str(fields.get("kind", "")))
    fields["params"] = check_params(fields["kind"], fields.get("params") or {})
    await _check_channels(fields.get("channels"))
    if await AlertRule.filter(name=fields.get("name")).exists():
        raise AlertError(f"a rule named {str(fields.get('name'))[:80]!r} exists")
    try:
        return await AlertRule.create(**fields, builtin=False, updated_by=by)
    except IntegrityError as err:
        raise AlertError(f"a rule named {str(fields.get('name'))[:80]!r} exists") from err


async def get_rule(rule_id: int) -> AlertRule:
    rule = await AlertRule.get_or_none(id=rule_id)
    if rule is None:
        raise AlertNotFound(f"no rule {rule_id}")
    return rule


async def update_rule(rule_id: int, changes: Mapping[str, Any], by: str) -> AlertRule:
    """Changes to a rule. A builtin keeps its kind and name; params given replace the old ones
    (completed with the kind's defaults); a new kind without params takes its defaults."""
    rule = await get_rule(rule_id)
    changes = {k: v for k, v in changes.items() if k in RULE_FIELDS}
    if rule.builtin and "kind" in changes and changes["kind"] != rule.kind:
        raise AlertError("a builtin rule keeps its kind; disable it and create a rule of the other kind")
    if rule.builtin and "name" in changes and changes["name"] != rule.name:
        raise AlertError("a builtin rule keeps its name (the fleet finds its defaults by it)")
    kind = str(changes.get("kind", rule.kind))
    kind_of(kind)
    if "params" in changes:
        changes["params"] = check_params(kind, changes["params"] or {})
    elif kind != rule.kind:
        changes["params"] = default_params(kind)
    if "channels" in changes:
        await _check_channels(changes["channels"])
    if "name" in changes and changes["name"] != rule.name and await AlertRule.filter(name=changes["name"]).exists():
        raise AlertError(f"a rule named {str(changes['name'])[:80]!r} exists")
    rule.update_from_dict({**changes, "updated_by": by})
    try:
        await rule.save()
    except IntegrityError as err:
        raise AlertError("a rule with this name exists") from err
    return rule


async def delete_rule(rule_id: int, by: str) -> None:
    """A rule and its alerts (history included) go; builtins stay (disable them instead)."""
    rule = await get_rule(rule_id)
    if rule.builtin:
        raise AlertError(f"rule {rule.name!r} is builtin: it may be edited or disabled, not deleted")
    await rule.delete()


__all__ = [
    "AlertError",
    "AlertNotFound",
    "RuleError",
    "acknowledge",
    "create_rule",
    "delete_rule",
    "ensure_builtin_rules",
    "get_alert",
    "get_rule",
    "groups",
    "list_alerts",
    "resolve",
    "silence",
    "unsilence",
    "update_rule",
]
