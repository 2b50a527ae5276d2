"""The relay's pages for admins (docs/relay.md, "Pages"): `/relay` (endpoints with their state and
counts, routes), an endpoint's page (its settings; rotate, enable, disable, replay, test, delete;
its recent deliveries and dead letters, each with a replay button) and the forms for endpoints
and routes. A form becomes the API's own body model (fleet/api/routes/relay.py) and the API's
route function is called with it (call_api): the same checks, changes and audit, the viewer as the
actor. Every page needs Permission.RELAY (admin); the forms are POSTs that fleet.api.csrf's
CrossSiteGuard lets through only from the fleet's own pages. A signing secret appears once: in the
page that answers the creation or the rotation."""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from fleet.api.deps import RowId
from fleet.api.routes import relay as api
from fleet.auth.people import Principal
from fleet.auth.roles import Permission
from fleet.relay.models import DeliveryStatus, EndpointKind
from fleet.web.broadcast_kit import Words, call_api, page, read_api, words_of
from fleet.web.pages import _form, templates, viewer_of
from fleet.web.rule_pages import _problems

router = APIRouter(include_in_schema=False)
templates.env.globals["may_relay"] = (  # the nav's relay link, for admins
    lambda viewer: isinstance(viewer, Principal) and viewer.may(Permission.RELAY))
RECENT = 20  # deliveries on an endpoint's page
DEAD_SHOWN = 50  # dead letters on an endpoint's page
DONE = ("created", "saved", "enabled", "disabled", "replayed", "tested", "deleted")
Form = dict[str, list[str]]
NUMBERS = {"timeout_s": float, "retry_base_s": float, "retry_max_s": float, "max_attempts": int, "gone_limit": int,
           "failure_budget": int, "failure_window_s": float, "max_in_flight": int, "snapshot_wait_s": float}
ROTATE_CHOICES = (0, 3600, 86400, 7 * 86400)  # how long the old secret still signs, offered by the page


def _one(form: Form, name: str) -> str:
    return form.get(name, [""])[0].strip()


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        return text  # the model says what is wrong with it


async def guarded(request: Request) -> Principal | Response:
    """The viewer if an admin (Permission.RELAY); else the login page or a 403 page."""
    viewer = await viewer_of(request)
    if viewer is None:
        return RedirectResponse("/login", status_code=303)
    if not viewer.may(Permission.RELAY):
        tr = words_of(request)
        return refusal(request, viewer, tr("relay.error.role", role=viewer.role.value), 403)
    return viewer


def refusal(request: Request, viewer: Principal, message: str, status_code: int) -> Response:
    return page(request, "notice.html", {"viewer": viewer, "message": message}, status_code)


def _no(request: Request, key: str, row_id: int) -> str:
    """'No relay endpoint #3.' (key: relay.error.no_endpoint or relay.error.no_route)."""
    tr = words_of(request)
    return tr(key, id=row_id)


def _done(tr: Words, done: str | None) -> str | None:
    return tr(f"relay.done.{done}") if done in DONE else None


# -- the list ----------------------------------------------------------------------------------

@router.get("/relay", response_class=HTMLResponse)
async def relay_page(request: Request, done: Annotated[str | None, Query(max_length=20)] = None) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    endpoints = await read_api(api.list_endpoints, request, viewer)
    routes = await read_api(api.list_routes, request, viewer, endpoint=None)
    return page(request, "relay.html", {"viewer": viewer, "endpoints": endpoints.items,
                                        "endpoints_total": endpoints.total, "routes": routes.items,
                                        "routes_total": routes.total, "done": _done(words_of(request), done)})


# -- endpoints ---------------------------------------------------------------------------------

def endpoint_values(form: Form, kind: str, *, new: bool) -> dict[str, Any]:
    """The form's values as the API's body: numbers as numbers, empty optional fields absent or null."""
    values: dict[str, Any] = {"name": _one(form, "name"), "url": _one(form, "url")}
    for field, number in NUMBERS.items():
        text = _one(form, field)
        if text:
            values[field] = _number(text, number)
    if kind == EndpointKind.MQTT:
        values["topic"] = _one(form, "topic") or (api.DEFAULT_TOPIC if new else None)
        if values["topic"] is None:
            del values["topic"]
        values["username"] = _one(form, "username") or None
        values["ca_pem"] = form.get("ca_pem", [""])[0].strip() or None
        password = form.get("password", [""])[0]
        if password:  # empty: kept (a new endpoint: none)
            values["password"] = password
        elif _one(form, "forget_password") == "yes" and not new:
            values["password"] = None
        if new:
            values = {k: v for k, v in values.items() if v is not None}
    if new:
        values["kind"] = kind
        values["enabled"] = _one(form, "enabled") == "yes"
    return values


def _shown(values: dict[str, Any]) -> dict[str, Any]:
    """What a form shows again: never a password someone typed."""
    return {k: v for k, v in values.items() if k != "password"}


async def endpoint_page_of(request: Request, viewer: Principal, endpoint: Any, kind: str, values: dict[str, Any],
                           *, errors: list[str] | None = None, status_code: int = 200, done: str | None = None,
                           secret: str | None = None) -> Response:
    tr = words_of(request)
    recent = dead = routes = None
    if endpoint is not None:
        recent = (await read_api(api.list_deliveries, request, viewer, endpoint=endpoint.id, status_=None,
                                 device=None, limit=RECENT, before=None)).items
        dead = (await read_api(api.list_deliveries, request, viewer, endpoint=endpoint.id,
                               status_=DeliveryStatus.DEAD, device=None, limit=DEAD_SHOWN, before=None)).items
        routes = (await read_api(api.list_routes, request, viewer, endpoint=endpoint.id)).items
    defaults = api._Settings().model_dump()
    return page(request, "relay_endpoint.html", {
        "viewer": viewer, "endpoint": endpoint, "kind": kind, "v": {**defaults, **values}, "errors": errors or [],
        "done": _done(tr, done), "secret": secret, "recent": recent, "dead": dead, "routes": routes,
        "numbers": list(NUMBERS), "rotate_choices": ROTATE_CHOICES,
        "action": f"/relay/endpoints/{endpoint.id}" if endpoint else "/relay/endpoints/new"}, status_code)


async def _endpoint_page(request: Request, viewer: Principal, endpoint_id: int, **shown: Any) -> Response:
    try:
        endpoint = await read_api(api.get_endpoint, request, viewer, endpoint_id=endpoint_id)
    except HTTPException:  # the route's 404
        return refusal(request, viewer, _no(request, "relay.error.no_endpoint", endpoint_id), 404)
    values = shown.pop("values", None) or endpoint.model_dump(mode="json")
    return await endpoint_page_of(request, viewer, endpoint, endpoint.kind.value, values, **shown)


@router.get("/relay/endpoints/new", response_class=HTMLResponse)
async def new_endpoint_page(request: Request, kind: Annotated[str, Query(max_length=8)] = "webhook") -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    kind = kind if kind in ("webhook", "mqtt") else "webhook"
    return await endpoint_page_of(request, viewer, None, kind, {"enabled": True, "topic": api.DEFAULT_TOPIC})


@router.post("/relay/endpoints/new", response_class=HTMLResponse)
async def new_endpoint_submit(request: Request) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    form = await _form(request)
    kind = _one(form, "kind") if _one(form, "kind") in ("webhook", "mqtt") else "webhook"
    values = endpoint_values(form, kind, new=True)
    try:
        body = api.EndpointCreate.model_validate(values)
    except ValidationError as err:
        return await endpoint_page_of(request, viewer, None, kind, _shown(values), errors=_problems(err),
                                      status_code=422)
    outcome = await call_api(api.create_endpoint, request, viewer, body=body)
    if outcome.errors:
        return await endpoint_page_of(request, viewer, None, kind, _shown(values), errors=outcome.errors,
                                      status_code=outcome.status)
    # not a redirect: the secret is in this answer only
    return await _endpoint_page(request, viewer, outcome.saved.id, done="created", secret=outcome.saved.secret)


@router.get("/relay/endpoints/{endpoint_id}", response_class=HTMLResponse)
async def endpoint_page(request: Request, endpoint_id: RowId,
                        done: Annotated[str | None, Query(max_length=20)] = None) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    return await _endpoint_page(request, viewer, endpoint_id, done=done)


@router.post("/relay/endpoints/{endpoint_id}", response_class=HTMLResponse)
async def endpoint_submit(request: Request, endpoint_id: RowId) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    try:
        endpoint = await read_api(api.get_endpoint, request, viewer, endpoint_id=endpoint_id)
    except HTTPException:
        return refusal(request, viewer, _no(request, "relay.error.no_endpoint", endpoint_id), 404)
    values = endpoint_values(await _form(request), endpoint.kind.value, new=False)
    try:
        body = api.EndpointUpdate.model_validate(values)
    except ValidationError as err:
        return await _endpoint_page(request, viewer, endpoint_id, values=_shown(values), errors=_problems(err),
                                    status_code=422)
    outcome = await call_api(api.update_endpoint, request, viewer, endpoint_id=endpoint_id, body=body)
    if outcome.errors:
        return await _endpoint_page(request, viewer, endpoint_id, values=_shown(values), errors=outcome.errors,
                                    status_code=outcome.status)
    return RedirectResponse(f"/relay/endpoints/{endpoint_id}?done=saved", status_code=303)


@router.post("/relay/endpoints/{endpoint_id}/rotate", response_class=HTMLResponse)
async def rotate_submit(request: Request, endpoint_id: RowId) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    text = _one(await _form(request), "previous_valid_s")
    try:
        body = api.RotateBody.model_validate({"previous_valid_s": _number(text, int)} if text else {})
    except ValidationError as err:
        return await _endpoint_page(request, viewer, endpoint_id, errors=_problems(err), status_code=422)
    outcome = await call_api(api.rotate_endpoint, request, viewer, endpoint_id=endpoint_id, body=body)
    if outcome.errors:
        return await _endpoint_page(request, viewer, endpoint_id, errors=outcome.errors, status_code=outcome.status)
    return await _endpoint_page(request, viewer, endpoint_id, secret=outcome.saved.secret)


ACTIONS = {"enable": (api.enable_endpoint, "enabled"), "disable": (api.disable_endpoint, "disabled"),
           "replay": (api.replay_endpoint, "replayed"), "test": (api.test_endpoint, "tested")}


@router.post("/relay/endpoints/{endpoint_id}/{action}", response_class=HTMLResponse)
async def endpoint_action(request: Request, endpoint_id: RowId, action: str) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    if action == "delete":
        outcome = await call_api(api.delete_endpoint, request, viewer, endpoint_id=endpoint_id)
        if outcome.errors:
            return refusal(request, viewer, outcome.errors[0], outcome.status)
        return RedirectResponse("/relay?done=deleted", status_code=303)
    if action not in ACTIONS:
        tr = words_of(request)
        return refusal(request, viewer, tr("relay.error.no_action"), 404)
    route, done = ACTIONS[action]
    outcome = await call_api(route, request, viewer, endpoint_id=endpoint_id)
    if outcome.errors:
        return await _endpoint_page(request, viewer, endpoint_id, errors=outcome.errors, status_code=outcome.status)
    return RedirectResponse(f"/relay/endpoints/{endpoint_id}?done={done}", status_code=303)


@router.post("/relay/deliveries/{delivery_id}/replay", response_class=HTMLResponse)
async def delivery_replay_submit(request: Request, delivery_id: api.DeliveryId) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    outcome = await call_api(api.replay_delivery, request, viewer, delivery_id=delivery_id)
    if outcome.errors:
        return refusal(request, viewer, outcome.errors[0], outcome.status)
    return RedirectResponse(f"/relay/endpoints/{outcome.saved.endpoint_id}?done=replayed", status_code=303)


# -- routes ------------------------------------------------------------------------------------

LISTS = ("types", "wards", "tags", "devices")  # typed, comma or line separated
CHOICES = {"phases": api.PHASES, "categories": api.CATEGORIES, "device_kinds": api.KINDS}  # ticked


def route_values(form: Form) -> dict[str, Any]:
    endpoint = _one(form, "endpoint_id")
    values: dict[str, Any] = {"name": _one(form, "name"), "endpoint_id": _number(endpoint, int) if endpoint else None,
                              "enabled": _one(form, "enabled") == "yes",
                              "min_severity": _one(form, "min_severity") or None}
    for field in LISTS:
        values[field] = _items(form.get(field, [""])[0])
    for field in CHOICES:
        values[field] = [v for v in form.get(field, []) if v]
    return values


async def route_form(request: Request, viewer: Principal, route: Any, values: dict[str, Any], *,
                     errors: list[str] | None = None, status_code: int = 200, done: str | None = None) -> Response:
    endpoints = (await read_api(api.list_endpoints, request, viewer)).items
    return page(request, "relay_route.html", {
        "viewer": viewer, "route": route, "v": values, "endpoints": endpoints, "errors": errors or [],
        "done": _done(words_of(request), done), "lists": LISTS, "choices": CHOICES, "severities": api.SEVERITIES,
        "action": f"/relay/routes/{route.id}" if route else "/relay/routes/new"}, status_code)


@router.get("/relay/routes/new", response_class=HTMLResponse)
async def new_route_page(request: Request,
                         endpoint: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    return await route_form(request, viewer, None, {"endpoint_id": endpoint, "enabled": True})


@router.post("/relay/routes/new", response_class=HTMLResponse)
async def new_route_submit(request: Request) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    values = route_values(await _form(request))
    try:
        body = api.RouteCreate.model_validate(values)
    except ValidationError as err:
        return await route_form(request, viewer, None, values, errors=_problems(err), status_code=422)
    outcome = await call_api(api.create_route, request, viewer, body=body)
    if outcome.errors:
        return await route_form(request, viewer, None, values, errors=outcome.errors, status_code=outcome.status)
    return RedirectResponse(f"/relay/routes/{outcome.saved.id}?done=created", status_code=303)


@router.get("/relay/routes/{route_id}", response_class=HTMLResponse)
async def route_page(request: Request, route_id: RowId,
                     done: Annotated[str | None, Query(max_length=20)] = None) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    try:
        route = await read_api(api.get_route, request, viewer, route_id=route_id)
    except HTTPException:
        return refusal(request, viewer, _no(request, "relay.error.no_route", route_id), 404)
    return await route_form(request, viewer, route, route.model_dump(), done=done)


@router.post("/relay/routes/{route_id}", response_class=HTMLResponse)
async def route_submit(request: Request, route_id: RowId) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    try:
        route = await read_api(api.get_route, request, viewer, route_id=route_id)
    except HTTPException:
        return refusal(request, viewer, _no(request, "relay.error.no_route", route_id), 404)
    values = route_values(await _form(request))
    try:
        body = api.RouteUpdate.model_validate(values)
    except ValidationError as err:
        return await route_form(request, viewer, route, values, errors=_problems(err), status_code=422)
    outcome = await call_api(api.update_route, request, viewer, route_id=route_id, body=body)
    if outcome.errors:
        return await route_form(request, viewer, route, values, errors=outcome.errors, status_code=outcome.status)
    return RedirectResponse(f"/relay/routes/{route_id}?done=saved", status_code=303)


@router.post("/relay/routes/{route_id}/delete", response_class=HTMLResponse)
async def route_delete_submit(request: Request, route_id: RowId) -> Response:
    viewer = await guarded(request)
    if isinstance(viewer, Response):
        return viewer
    outcome = await call_api(api.delete_route, request, viewer, route_id=route_id)
    if outcome.errors:
        return refusal(request, viewer, outcome.errors[0], outcome.status)
    return RedirectResponse("/relay?done=deleted", status_code=303)
