"""Alert rules and notification channels for ops staff (docs/ops.md, "Alert pages"): `/rules` (list,
create, edit kind parameters, severity, scope, enabled, channels) and `/channels` (list, create,
edit; the webhook secret write-only; a test message). A form becomes the API's own body model
(RuleCreate/RuleUpdate of fleet/api/routes/ops_alerts.py, ChannelCreate/ChannelUpdate of
fleet/api/routes/ops_channels.py) and the API's route function is called with it (call_api), so
the same checks, changes and audit apply. Changes need Permission.ALERTS, reading READ."""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from fleet.api.deps import RowId
from fleet.api.routes import ops_alerts as rules_api
from fleet.api.routes import ops_channels as channels_api
from fleet.auth.people import Principal
from fleet.auth.roles import Permission
from fleet.ops.models import AlertRule, NotificationChannel, Severity
from fleet.ops.rules import KINDS
from fleet.web.alert_pages import done_of, guarded, page, refusal
from fleet.web.broadcast_kit import call_api, read_api
from fleet.web.pages import _form

router = APIRouter(include_in_schema=False)
LISTED = 500  # rules or channels on a list page (the API pages through all)
Form = dict[str, list[str]]


def _one(form: Form, name: str) -> str:
    return form.get(name, [""])[0].strip()


def _problems(err: ValidationError) -> list[str]:
    """The model's complaints, one line each, naming the field (the input is never repeated)."""
    lines = []
    for problem in err.errors()[:10]:
        where = ".".join(str(p) for p in problem["loc"] if not isinstance(p, int))
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return lines


# -- rules -----------------------------------------------------------------------------------------

def param_fields(kind: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The kind's parameters as form inputs: name, value, description, bounds, step."""
    spec = KINDS.get(kind)
    if spec is None:
        return []
    defaults = spec.params().model_dump()
    out = []
    for name, field in spec.params.model_fields.items():
        bounds = {a: getattr(m, a) for m in field.metadata for a in ("ge", "gt", "le", "lt") if hasattr(m, a)}
        out.append({"name": name, "value": values.get(name, defaults.get(name)), "about": field.description or "",
                    "min": bounds.get("ge", bounds.get("gt")), "max": bounds.get("le", bounds.get("lt")),
                    "step": "1" if field.annotation is int else "any"})
    return out


def params_of(kind: str, form: Form) -> dict[str, Any]:
    """The form's `param.<name>` values as the kind's types (the model, strict, checks them)."""
    spec = KINDS.get(kind)
    if spec is None:
        return {}
    params: dict[str, Any] = {}
    for name, field in spec.params.model_fields.items():
        text = _one(form, f"param.{name}")
        if not text:
            continue
        try:
            params[name] = int(text) if field.annotation is int else float(text) if field.annotation is float else text
        except ValueError:
            params[name] = text  # the model says what is wrong with it
    return params


def rule_values(form: Form, kind: str, builtin: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        "severity": _one(form, "severity"), "enabled": _one(form, "enabled") == "yes",
        "device_kind": _one(form, "device_kind") or None, "role": _one(form, "role") or None,
        "ward": _one(form, "ward") or None, "channels": [c for c in form.get("channels", []) if c],
        "params": params_of(kind, form)}
    if not builtin:
        values["name"] = _one(form, "name")
        values["kind"] = kind
    return values


async def _channel_names() -> list[str]:
    return [str(n) for n in await NotificationChannel.all().order_by("name").limit(LISTED)
            .values_list("name", flat=True)]


async def rule_form(request: Request, viewer: Principal, rule: AlertRule | None, kind: str,
                    values: dict[str, Any], errors: list[str] | None = None, status_code: int = 200,
                    done: str | None = None) -> Response:
    return page(request, "rule_form.html", {
        "viewer": viewer, "rule": rule, "kind": kind, "spec": KINDS.get(kind), "kinds": KINDS, "v": values,
        "params": param_fields(kind, values.get("params") or {}), "severities": [s.value for s in Severity],
        "channels": await _channel_names(), "errors": errors or [], "done": done_of(done),
        "may_change": viewer.may(Permission.ALERTS),
        "action": f"/rules/{rule.id}" if rule else "/rules/new"}, status_code)


@router.get("/rules", response_class=HTMLResponse)
async def rules_page(request: Request) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    listed = await read_api(rules_api.list_rules, request, viewer, kind=None, limit=LISTED, offset=0)
    return page(request, "rules.html", {"viewer": viewer, "rules": listed.items, "total": listed.total,
                                        "kinds": KINDS, "may_change": viewer.may(Permission.ALERTS)})


@router.get("/rules/new", response_class=HTMLResponse)
async def new_rule_page(request: Request, kind: Annotated[str, Query(max_length=32)] = "offline") -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    kind = kind if kind in KINDS else "offline"
    return await rule_form(request, viewer, None, kind, {"severity": Severity.MAJOR.value, "enabled": True,
                                                         "channels": [], "params": {}})


@router.post("/rules/new", response_class=HTMLResponse)
async def new_rule_submit(request: Request) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    form = await _form(request)
    kind = _one(form, "kind")
    values = rule_values(form, kind, builtin=False)
    try:
        body = rules_api.RuleCreate.model_validate(values)
    except ValidationError as err:
        return await rule_form(request, viewer, None, kind, values, _problems(err), 422)
    outcome = await call_api(rules_api.create_rule, request, viewer, body=body)
    if outcome.errors:
        return await rule_form(request, viewer, None, kind, values, outcome.errors, outcome.status)
    return RedirectResponse(f"/rules/{outcome.saved.id}?done=created", status_code=303)


@router.get("/rules/{rule_id}", response_class=HTMLResponse)
async def rule_page(request: Request, rule_id: RowId,
                    done: Annotated[str | None, Query(max_length=20)] = None) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    rule = await AlertRule.get_or_none(id=rule_id)
    if rule is None:
        return refusal(request, viewer, f"No rule #{rule_id}.", 404)
    values = {"name": rule.name, "severity": rule.severity.value, "enabled": rule.enabled,
              "device_kind": rule.device_kind, "role": rule.role, "ward": rule.ward, "channels": rule.channels,
              "params": rule.params}
    return await rule_form(request, viewer, rule, rule.kind, values, done=done)


@router.post("/rules/{rule_id}", response_class=HTMLResponse)
async def rule_submit(request: Request, rule_id: RowId) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    rule = await AlertRule.get_or_none(id=rule_id)
    if rule is None:
        return refusal(request, viewer, f"No rule #{rule_id}.", 404)
    form = await _form(request)
    values = rule_values(form, rule.kind, rule.builtin)
    values.pop("kind", None)  # a rule keeps its kind on this page (another kind: a new rule)
    try:
        body = rules_api.RuleUpdate.model_validate(values)
    except ValidationError as err:
        return await rule_form(request, viewer, rule, rule.kind, values, _problems(err), 422)
    outcome = await call_api(rules_api.update_rule, request, viewer, rule_id=rule_id, body=body)
    if outcome.errors:
        return await rule_form(request, viewer, rule, rule.kind, values, outcome.errors, outcome.status)
    return RedirectResponse(f"/rules/{rule_id}?done=saved", status_code=303)


# -- channels --------------------------------------------------------------------------------------

def channel_values(form: Form, kind: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": _one(form, "name"), "min_severity": _one(form, "min_severity"),
        "rate_per_hour": _one(form, "rate_per_hour"), "enabled": _one(form, "enabled") == "yes"}
    rate = values["rate_per_hour"]
    values["rate_per_hour"] = int(rate) if rate.isdigit() else rate
    if kind == "email":
        values["target"] = {"to": [a.strip() for a in _one(form, "to").replace(",", "\n").splitlines() if a.strip()]}
    else:
        values["target"] = {"url": _one(form, "url")}
    secret = form.get("secret", [""])[0]
    if secret:
        values["secret"] = secret
    return values


async def channel_form(request: Request, viewer: Principal, channel: Any, kind: str, values: dict[str, Any],
                       errors: list[str] | None = None, status_code: int = 200, done: str | None = None,
                       tested: Any = None) -> Response:
    target = values.get("target") or {}
    return page(request, "channel_form.html", {
        "viewer": viewer, "channel": channel, "kind": kind, "v": values, "url": target.get("url", ""),
        "to": "\n".join(target.get("to", [])), "severities": [s.value for s in Severity], "errors": errors or [],
        "done": done_of(done), "may_change": viewer.may(Permission.ALERTS), "tested": tested,
        "action": f"/channels/{channel.id}" if channel else "/channels/new"}, status_code)


def _shown(values: dict[str, Any]) -> dict[str, Any]:
    """The values a form shows again: never the secret someone typed."""
    return {k: v for k, v in values.items() if k != "secret"}


@router.get("/channels", response_class=HTMLResponse)
async def channels_page(request: Request) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    listed = await read_api(channels_api.list_channels, request, viewer, limit=LISTED, offset=0)
    return page(request, "channels.html", {"viewer": viewer, "channels": listed.items, "total": listed.total,
                                           "may_change": viewer.may(Permission.ALERTS)})


@router.get("/channels/new", response_class=HTMLResponse)
async def new_channel_page(request: Request, kind: Annotated[str, Query(max_length=8)] = "webhook") -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    kind = kind if kind in ("webhook", "email") else "webhook"
    return await channel_form(request, viewer, None, kind, {"min_severity": Severity.WARNING.value,
                                                            "rate_per_hour": 20, "enabled": True})


@router.post("/channels/new", response_class=HTMLResponse)
async def new_channel_submit(request: Request) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    form = await _form(request)
    kind = _one(form, "kind")
    values = {**channel_values(form, kind), "kind": kind}
    try:
        body = channels_api.ChannelCreate.model_validate(values)
    except ValidationError as err:
        return await channel_form(request, viewer, None, kind, _shown(values), _problems(err), 422)
    outcome = await call_api(channels_api.create_channel, request, viewer, body=body)
    if outcome.errors:
        return await channel_form(request, viewer, None, kind, _shown(values), outcome.errors, outcome.status)
    return RedirectResponse(f"/channels/{outcome.saved.id}?done=created", status_code=303)


async def _channel_page(request: Request, viewer: Principal, channel_id: int, **shown: Any) -> Response:
    try:
        channel = await read_api(channels_api.get_channel, request, viewer, channel_id=channel_id)
    except HTTPException:  # the route's 404
        return refusal(request, viewer, f"No channel #{channel_id}.", 404)
    values = shown.pop("values", None) or channel.model_dump()
    return await channel_form(request, viewer, channel, channel.kind, values, **shown)


@router.get("/channels/{channel_id}", response_class=HTMLResponse)
async def channel_page(request: Request, channel_id: RowId,
                       done: Annotated[str | None, Query(max_length=20)] = None) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    return await _channel_page(request, viewer, channel_id, done=done)


@router.post("/channels/{channel_id}", response_class=HTMLResponse)
async def channel_submit(request: Request, channel_id: RowId) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    channel = await NotificationChannel.get_or_none(id=channel_id)
    if channel is None:
        return refusal(request, viewer, f"No channel #{channel_id}.", 404)
    values = channel_values(await _form(request), channel.kind)
    try:
        body: BaseModel = channels_api.ChannelUpdate.model_validate(values)
    except ValidationError as err:
        return await _channel_page(request, viewer, channel_id, values=_shown(values), errors=_problems(err),
                                   status_code=422)
    outcome = await call_api(channels_api.update_channel, request, viewer, channel_id=channel_id, body=body)
    if outcome.errors:
        return await _channel_page(request, viewer, channel_id, values=_shown(values), errors=outcome.errors,
                                   status_code=outcome.status)
    return RedirectResponse(f"/channels/{channel_id}?done=saved", status_code=303)


@router.post("/channels/{channel_id}/test", response_class=HTMLResponse)
async def channel_test_submit(request: Request, channel_id: RowId) -> Response:
    viewer = await guarded(request, change=True)
    if isinstance(viewer, Response):
        return viewer
    outcome = await call_api(channels_api.test_channel, request, viewer, channel_id=channel_id)
    if outcome.errors:
        return await _channel_page(request, viewer, channel_id, errors=outcome.errors, status_code=outcome.status)
    return await _channel_page(request, viewer, channel_id, tested=outcome.saved)
