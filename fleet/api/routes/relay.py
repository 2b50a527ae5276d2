"""The relay's endpoints, routes and deliveries (/api/relay; docs/relay.md, "API").

Everything here needs Permission.RELAY (admin only) and every change is audited (`relay.*`). An
endpoint's signing secret is made by the fleet (fleet/ops/webhook_sign.new_secret) and shown once,
in the answer that made it (creation, rotation); an MQTT password is write-only (`password_set`).
After a change of a route or an endpoint the relay worker reloads its route table.
Replay, enable and rotation are fleet/relay/outbox.py's; after them the relay worker is nudged.
"""

import ssl
import string
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tortoise.exceptions import IntegrityError
from tortoise.functions import Count

from contract import DEVICE_ID_PATTERN
from fleet.api.deps import LOGGED_IN, Auditor, RowId, RuntimeDep, acting, permitted
from fleet.api.errors import answer
from fleet.auth.people import Principal
from fleet.auth.roles import Permission
from fleet.ops.webhook_sign import new_secret
from fleet.relay import outbox
from fleet.relay.message import message_id as relay_message_id
from fleet.relay.message import payload as relay_payload
from fleet.relay.models import DeliveryStatus, EndpointKind, RelayDelivery, RelayEndpoint, RelayRoute
from fleet.runtime import Runtime

router = APIRouter(prefix="/api/relay", tags=["relay"], dependencies=[LOGGED_IN])

Admin = Annotated[Auditor, acting(Permission.RELAY)]
Viewer = Annotated[Principal, permitted(Permission.RELAY)]

PLACEHOLDERS = ("device", "type", "phase", "category", "ward")
DEFAULT_TOPIC = "ioc/events/{ward}/{device}/{type}"
CATEGORIES = ("security", "traffic_safety", "other")
PHASES = ("start", "update", "end", "once")
SEVERITIES = ("critical", "major", "minor", "warning", "info")
KINDS = ("pi", "esp32")
LIST_MAX = 100  # entries of a route's types, wards, tags
DEVICES_MAX = 1000  # entries of a route's devices
PAGE_MAX = 500  # deliveries a page
ROTATE_PREVIOUS_DEFAULT = 86400  # a rotated-out secret still signs for a day
ROTATE_PREVIOUS_MAX = 30 * 86400  # how long an old secret may stay valid after a rotation
TEST_DEVICE = "relay-test"  # the device id of a test message's queue
LISTED = 500  # endpoints and routes a list answers (there are a handful)

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
Category = Literal["security", "traffic_safety", "other"]
Phase = Literal["start", "update", "end", "once"]
SeverityName = Literal["critical", "major", "minor", "warning", "info"]
DeviceKind = Literal["pi", "esp32"]
EventType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Label = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[^\x00-\x1f\x7f]+$")]
DeviceName = Annotated[str, Field(pattern=f"^{DEVICE_ID_PATTERN}$")]


# -- checks ------------------------------------------------------------------------------------

def _no_controls(text: str, what: str) -> None:
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"{what} has a space or a control character")


def check_url(kind: str, url: str) -> str:
    """A webhook's http(s) URL, or an MQTT broker's mqtt(s)://host:port; never credentials in it."""
    _no_controls(url, "the URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("the URL cannot be read (its host or port)") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError("no credentials in the URL (an MQTT endpoint has username and password fields)")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if kind == EndpointKind.WEBHOOK:
        if parts.scheme not in ("http", "https"):
            raise ValueError("a webhook URL starts with http:// or https://")
        if parts.fragment:
            raise ValueError("a webhook URL has no #fragment")
        return url
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("an MQTT endpoint's URL is mqtt://host:port or mqtts://host:port")
    if port is None or port == 0:
        raise ValueError("an MQTT endpoint's URL names its port: mqtt://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("an MQTT endpoint's URL is only mqtt(s)://host:port (the topic is its own field)")
    return url


def check_topic(topic: str) -> str:
    """A topic template: levels of text and the placeholders {device} {type} {phase} {category} {ward}."""
    _no_controls(topic, "the topic")
    if "+" in topic or "#" in topic:
        raise ValueError("a topic has no wildcard (+ or #)")
    if topic.startswith("$"):
        raise ValueError("a topic does not start with $ (the broker's own topics)")
    try:
        pieces = list(string.Formatter().parse(topic))
    except ValueError:
        raise ValueError("a topic's braces do not pair: a placeholder is {name}") from None
    for _, field, spec, conversion in pieces:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            raise ValueError("a topic's placeholders are only " + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
    if any(level == "" for level in topic.split("/")):
        raise ValueError("a topic has no empty level (no leading, trailing or double /)")
    return topic


def check_ca(pem: str) -> str:
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError):
        raise ValueError("ca_pem is not a PEM certificate") from None
    return pem


# -- endpoints ---------------------------------------------------------------------------------

class _Settings(BaseModel):
    """An endpoint's delivery settings (docs/relay.md, "Retries, order, and the bounds")."""

    model_config = ConfigDict(extra="forbid")
    timeout_s: float = Field(default=10.0, ge=0.5, le=120, description="one attempt, at most")
    retry_base_s: float = Field(default=5.0, ge=0.1, le=3600, description="delay after the first failure (doubles)")
    retry_max_s: float = Field(default=3600.0, ge=1, le=86400, description="the longest delay between attempts")
    max_attempts: int = Field(default=15, ge=1, le=100, description="attempts before a delivery is dead-lettered")
    gone_limit: int = Field(default=2, ge=1, le=100, description="410 Gone answers in a row that disable the endpoint")
    failure_budget: int = Field(default=200, ge=1, le=1_000_000, description="failures in a row that, with "
                                                                     "failure_window_s, disable the endpoint")
    failure_window_s: float = Field(default=86400.0, ge=60, le=30 * 86400)
    max_in_flight: int = Field(default=32, ge=1, le=64, description="sends at once to this endpoint")
    snapshot_wait_s: float = Field(default=10.0, ge=0, le=600, description="waiting for an event's snapshot")


SETTINGS = tuple(_Settings.model_fields)
Url = Annotated[str, Field(min_length=1, max_length=500)]
Topic = Annotated[str, Field(min_length=1, max_length=200, description="mqtt only: a template over "
                                                                       "{device} {type} {phase} {category} {ward}")]
Username = Annotated[str, Field(min_length=1, max_length=120)]
Password = Annotated[str, Field(min_length=1, max_length=200, description="mqtt only; write-only")]
CaPem = Annotated[str, Field(min_length=1, max_length=65536, description="mqtts only: the broker's CA (PEM)")]


class EndpointCreate(_Settings):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "ioc-wall", "kind": "webhook", "url": "https://ioc.example/hook"},
        {"name": "ioc-broker", "kind": "mqtt", "url": "mqtts://broker.ioc.example:8883", "username": "fleet",
         "password": "a password", "topic": "ioc/events/{ward}/{device}/{type}"}]})
    name: Name
    kind: EndpointKind
    url: Url = Field(description="webhook: http(s)://…; mqtt: mqtt(s)://host:port; no credentials in it")
    topic: Topic | None = Field(default=None, description=f"mqtt only; default {DEFAULT_TOPIC}")
    username: Username | None = None
    password: Password | None = None
    ca_pem: CaPem | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def fits_kind(self) -> "EndpointCreate":
        self.url = check_url(self.kind, self.url)
        if self.kind == EndpointKind.WEBHOOK:
            extra = [f for f in ("topic", "username", "password", "ca_pem") if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"a webhook endpoint has no {', '.join(extra)}")
        else:
            self.topic = check_topic(self.topic or DEFAULT_TOPIC)
            if self.ca_pem is not None:
                if not self.url.startswith("mqtts:"):
                    raise ValueError("ca_pem is for an mqtts:// endpoint")
                check_ca(self.ca_pem)
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s is at least retry_base_s")
        return self


class EndpointUpdate(BaseModel):
    """The fields to change (absent: kept). `password` or `ca_pem` null: removed. The kind stays."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    url: Url | None = None
    topic: Topic | None = None
    username: Username | None = None
    password: Password | None = None
    ca_pem: CaPem | None = None
    enabled: bool | None = None
    timeout_s: float | None = Field(default=None, ge=0.5, le=120)
    retry_base_s: float | None = Field(default=None, ge=0.1, le=3600)
    retry_max_s: float | None = Field(default=None, ge=1, le=86400)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    gone_limit: int | None = Field(default=None, ge=1, le=100)
    failure_budget: int | None = Field(default=None, ge=1, le=1_000_000)
    failure_window_s: float | None = Field(default=None, ge=60, le=30 * 86400)
    max_in_flight: int | None = Field(default=None, ge=1, le=64)
    snapshot_wait_s: float | None = Field(default=None, ge=0, le=600)


class EndpointPublic(BaseModel):
    id: int
    name: str
    kind: EndpointKind
    url: str
    topic: str | None = Field(description="mqtt only")
    username: str | None
    password_set: bool = Field(description="whether an MQTT password is stored (it is never shown)")
    ca_pem: str | None
    previous_secret_until: datetime | None = Field(description="after a rotation: until when the old secret "
                                                               "still signs too")
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    timeout_s: float
    retry_base_s: float
    retry_max_s: float
    max_attempts: int
    gone_limit: int
    failure_budget: int
    failure_window_s: float
    max_in_flight: int
    snapshot_wait_s: float
    consecutive_failures: int
    failing_since: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    pending: int = Field(description="deliveries waiting to be sent")
    dead: int = Field(description="dead letters (replay them to send them again)")
    created_at: datetime
    updated_at: datetime
    updated_by: str

    @classmethod
    def of(cls, row: RelayEndpoint, counts: dict[str, int] | None = None) -> "EndpointPublic":
        counts = counts or {}
        mqtt = row.kind == EndpointKind.MQTT
        return cls(id=row.id, name=row.name, kind=row.kind, url=row.url, topic=row.topic if mqtt else None,
                   username=row.username, password_set=bool(row.password), ca_pem=row.ca_pem,
                   previous_secret_until=row.previous_until if row.previous_secret else None,
                   enabled=row.enabled, disabled_reason=row.disabled_reason, disabled_at=row.disabled_at,
                   **{f: getattr(row, f) for f in SETTINGS}, consecutive_failures=row.consecutive_failures,
                   failing_since=row.failing_since, last_success_at=row.last_success_at,
                   last_failure_at=row.last_failure_at, last_error=row.last_error,
                   pending=counts.get(DeliveryStatus.PENDING.value, 0), dead=counts.get(DeliveryStatus.DEAD.value, 0),
                   created_at=row.created_at, updated_at=row.updated_at, updated_by=row.updated_by)


class EndpointWithSecret(EndpointPublic):
    secret: str = Field(description="the signing secret (whsec_…): shown in this answer only, never again")


class EndpointList(BaseModel):
    items: list[EndpointPublic]
    total: int


class RotateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    previous_valid_s: int = Field(default=ROTATE_PREVIOUS_DEFAULT, ge=0, le=ROTATE_PREVIOUS_MAX,
                                  description="how long the old secret still signs (0: not at all)")


class Replayed(BaseModel):
    replayed: int = Field(description="dead deliveries made pending again")


async def _counts(endpoint_ids: list[int] | None = None) -> dict[int, dict[str, int]]:
    """Pending and dead deliveries per endpoint."""
    query = RelayDelivery.filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.DEAD])
    if endpoint_ids is not None:
        query = query.filter(endpoint_id__in=endpoint_ids)
    rows = await (query.annotate(n=Count("id")).group_by("endpoint_id", "status")
                  .values("endpoint_id", "status", "n"))
    out: dict[int, dict[str, int]] = {}
    for row in rows:
        state = row["status"].value if isinstance(row["status"], DeliveryStatus) else str(row["status"])
        out.setdefault(int(row["endpoint_id"]), {})[state] = int(row["n"])
    return out


async def _endpoint(endpoint_id: int) -> RelayEndpoint:
    row = await RelayEndpoint.get_or_none(id=endpoint_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no relay endpoint {endpoint_id}")
    return row


async def endpoint_public(row: RelayEndpoint) -> EndpointPublic:
    return EndpointPublic.of(row, (await _counts([row.id])).get(row.id))


async def _changed(runtime: Runtime) -> None:
    """Routes or endpoints changed: the relay worker reloads its route table at once."""
    if runtime.relay is not None:  # None in a fleet without the relay worker
        await runtime.relay.routes_changed()


def _nudge(runtime: Runtime) -> None:
    """Deliveries became due (replay, enable, test): the relay worker looks now."""
    if runtime.relay is not None:
        runtime.relay.nudge()


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, message)


async def _name_free(model: type[RelayEndpoint] | type[RelayRoute], name: str, keep: int | None = None) -> None:
    taken = model.filter(name=name)
    if keep is not None:
        taken = taken.exclude(id=keep)
    if await taken.exists():
        raise HTTPException(status.HTTP_409_CONFLICT, f"the name {name!r} is taken")


BAD_ENDPOINT: dict[int | str, dict[str, Any]] = {
    409: answer("another endpoint has that name"),
}


@router.get("/endpoints")
async def list_endpoints(_: Viewer) -> EndpointList:
    """Every endpoint with its state and its pending and dead counts, by name."""
    rows = await RelayEndpoint.all().order_by("name").limit(LISTED)
    counts = await _counts()
    return EndpointList(items=[EndpointPublic.of(r, counts.get(r.id)) for r in rows],
                        total=await RelayEndpoint.all().count())


@router.post("/endpoints", status_code=status.HTTP_201_CREATED, responses=BAD_ENDPOINT)
async def create_endpoint(body: EndpointCreate, audit: Admin, runtime: RuntimeDep) -> EndpointWithSecret:
    """A new endpoint; its signing secret is in this answer and never shown again."""
    await _name_free(RelayEndpoint, body.name)
    secret = new_secret()
    values = body.model_dump(exclude={"topic"})
    try:
        row = await RelayEndpoint.create(**values, topic=body.topic or DEFAULT_TOPIC, secret=secret,
                                         updated_by=audit.actor)
    except IntegrityError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the name {body.name!r} is taken") from err
    await _changed(runtime)
    await audit("relay.endpoint.create", row.name, {"id": row.id, "kind": row.kind.value, "url": row.url})
    return EndpointWithSecret(**EndpointPublic.of(row).model_dump(), secret=secret)


@router.get("/endpoints/{endpoint_id}")
async def get_endpoint(endpoint_id: RowId, _: Viewer) -> EndpointPublic:
    return await endpoint_public(await _endpoint(endpoint_id))


@router.patch("/endpoints/{endpoint_id}", responses=BAD_ENDPOINT)
async def update_endpoint(endpoint_id: RowId, body: EndpointUpdate, audit: Admin,
                          runtime: RuntimeDep) -> EndpointPublic:
    """Change settings; absent fields are kept; `password` or `ca_pem` null removes it, any other null is refused."""
    row = await _endpoint(endpoint_id)
    changes = body.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key not in ("password", "ca_pem", "username"):
            raise _unprocessable(f"{key} cannot be null")
    if not changes:
        raise _unprocessable("nothing to update")
    merged = {"name": row.name, "kind": row.kind, "url": row.url, "enabled": row.enabled,
              **{f: getattr(row, f) for f in SETTINGS}}
    if row.kind == EndpointKind.MQTT:
        merged.update(topic=row.topic, username=row.username, password=row.password, ca_pem=row.ca_pem)
    merged.update(changes)
    try:  # the whole endpoint as it would be, checked as a new one is
        checked = EndpointCreate.model_validate(merged)
    except ValueError as err:
        raise _unprocessable(_first_problem(err)) from None
    if "name" in changes:
        await _name_free(RelayEndpoint, checked.name, keep=row.id)
    for key in changes:
        setattr(row, key, getattr(checked, key))
    row.updated_by = audit.actor
    try:
        await row.save()
    except IntegrityError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the name {checked.name!r} is taken") from err
    await _changed(runtime)
    await audit("relay.endpoint.update", row.name,
                {k: ("(set)" if k == "password" and v else "(pem)" if k == "ca_pem" and v else v)
                 for k, v in changes.items()})
    return await endpoint_public(row)


def _first_problem(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        problems = errors()
        if problems:
            where = ".".join(str(p) for p in problems[0]["loc"])
            message = str(problems[0]["msg"]).removeprefix("Value error, ")
            return f"{where}: {message}" if where else message
    return str(err)


@router.delete("/endpoints/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_endpoint(endpoint_id: RowId, audit: Admin, runtime: RuntimeDep) -> Response:
    """The endpoint, its routes and all its deliveries (pending and dead ones too)."""
    row = await _endpoint(endpoint_id)
    await row.delete()
    await _changed(runtime)
    await audit("relay.endpoint.delete", row.name, {"id": endpoint_id})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/endpoints/{endpoint_id}/rotate")
async def rotate_endpoint(endpoint_id: RowId, audit: Admin, body: RotateBody | None = None) -> EndpointWithSecret:
    """A new signing secret (in this answer only); the old one keeps signing too for `previous_valid_s`."""
    keep = body.previous_valid_s if body is not None else ROTATE_PREVIOUS_DEFAULT
    row = await _endpoint(endpoint_id)
    secret = await outbox.rotate_secret(row, datetime.now(UTC), keep)
    await RelayEndpoint.filter(id=row.id).update(updated_by=audit.actor)
    row.updated_by = audit.actor
    await audit("relay.endpoint.rotate", row.name, {"id": row.id, "previous_valid_s": keep})
    return EndpointWithSecret(**(await endpoint_public(row)).model_dump(), secret=secret)


@router.post("/endpoints/{endpoint_id}/enable")
async def enable_endpoint(endpoint_id: RowId, audit: Admin, runtime: RuntimeDep) -> EndpointPublic:
    """Sending again, its failure counts reset (its pending deliveries go out in order)."""
    row = await _endpoint(endpoint_id)
    await outbox.enable(row.id)
    await RelayEndpoint.filter(id=row.id).update(updated_by=audit.actor, updated_at=datetime.now(UTC))
    await _changed(runtime)
    _nudge(runtime)
    await audit("relay.endpoint.enable", row.name, {"id": row.id, "was_disabled_for": row.disabled_reason})
    return await endpoint_public(await _endpoint(endpoint_id))


@router.post("/endpoints/{endpoint_id}/disable")
async def disable_endpoint(endpoint_id: RowId, audit: Admin, runtime: RuntimeDep) -> EndpointPublic:
    """Nothing is sent to it; its deliveries stay pending (bounded) until it is enabled."""
    row = await _endpoint(endpoint_id)
    if row.enabled:
        await RelayEndpoint.filter(id=row.id).update(enabled=False, disabled_reason=f"disabled by {audit.actor}",
                                                     disabled_at=datetime.now(UTC), updated_by=audit.actor,
                                                     updated_at=datetime.now(UTC))
    await _changed(runtime)
    await audit("relay.endpoint.disable", row.name, {"id": row.id})
    return await endpoint_public(await _endpoint(endpoint_id))


@router.post("/endpoints/{endpoint_id}/replay")
async def replay_endpoint(endpoint_id: RowId, audit: Admin, runtime: RuntimeDep) -> Replayed:
    """Every dead delivery of the endpoint becomes pending again (same webhook-id)."""
    row = await _endpoint(endpoint_id)
    count = await outbox.replay_endpoint(row.id)
    _nudge(runtime)
    await audit("relay.endpoint.replay", row.name, {"id": row.id, "replayed": count})
    return Replayed(replayed=count)


class TestQueued(BaseModel):
    delivery_id: int
    message_id: str


@router.post("/endpoints/{endpoint_id}/test", status_code=status.HTTP_202_ACCEPTED)
async def test_endpoint(endpoint_id: RowId, audit: Admin, runtime: RuntimeDep) -> TestQueued:
    """Enqueue a synthetic `test` event (device `relay-test`) for the endpoint: sent like any delivery."""
    row = await _endpoint(endpoint_id)
    now = datetime.now(UTC)
    ses = int(now.timestamp() * 1_000_000)  # a fresh stream position: a fresh message id
    message_id = relay_message_id(TEST_DEVICE, 0, ses, 0)
    payload = relay_payload(device={"id": TEST_DEVICE, "kind": "pi", "name": "relay test", "ward": "", "site": "",
                                    "tags": [], "lat": None, "lon": None},
                            event={"id": f"relay-test-{ses}", "type": "test", "phase": "once", "category": "other",
                                   "at": now, "received_at": now, "data": {"by": audit.actor}},
                            stream=(0, ses, 0), snapshot=None, made_at=now)
    delivery = await RelayDelivery.create(endpoint_id=row.id, device_id=TEST_DEVICE, message_id=message_id,
                                          payload=payload, next_at=now, created_at=now)
    _nudge(runtime)
    await audit("relay.endpoint.test", row.name, {"id": row.id, "delivery": delivery.id})
    return TestQueued(delivery_id=delivery.id, message_id=message_id)


# -- routes ------------------------------------------------------------------------------------

def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


class _Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    types: list[EventType] = Field(default_factory=list, max_length=LIST_MAX, description="event types, any of")
    phases: list[Phase] = Field(default_factory=list, max_length=len(PHASES))
    categories: list[Category] = Field(default_factory=list, max_length=len(CATEGORIES))
    wards: list[Label] = Field(default_factory=list, max_length=LIST_MAX)
    device_kinds: list[DeviceKind] = Field(default_factory=list, max_length=len(KINDS))
    tags: list[Label] = Field(default_factory=list, max_length=LIST_MAX, description="a device with any of them")
    devices: list[DeviceName] = Field(default_factory=list, max_length=DEVICES_MAX)
    min_severity: SeverityName | None = Field(default=None, description="null: any severity")

    @field_validator("types", "phases", "categories", "wards", "device_kinds", "tags", "devices")
    @classmethod
    def once_each(cls, values: list[Any] | None) -> list[Any] | None:
        return None if values is None else _unique(values)


FILTERS = ("types", "phases", "categories", "wards", "device_kinds", "tags", "devices", "min_severity")


class RouteCreate(_Filter):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "security to the wall", "endpoint_id": 1, "categories": ["security"], "min_severity": "warning"}]})
    name: Name
    endpoint_id: int = Field(ge=1, le=2**31 - 1)
    enabled: bool = True


class RouteUpdate(BaseModel):
    """The fields to change (absent: kept); `min_severity` null: any severity."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    endpoint_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    enabled: bool | None = None
    types: list[EventType] | None = Field(default=None, max_length=LIST_MAX)
    phases: list[Phase] | None = Field(default=None, max_length=len(PHASES))
    categories: list[Category] | None = Field(default=None, max_length=len(CATEGORIES))
    wards: list[Label] | None = Field(default=None, max_length=LIST_MAX)
    device_kinds: list[DeviceKind] | None = Field(default=None, max_length=len(KINDS))
    tags: list[Label] | None = Field(default=None, max_length=LIST_MAX)
    devices: list[DeviceName] | None = Field(default=None, max_length=DEVICES_MAX)
    min_severity: SeverityName | None = None

    once_each = field_validator("types", "phases", "categories", "wards", "device_kinds", "tags",
                                "devices")(_Filter.once_each.__func__)  # type: ignore[attr-defined]


class RoutePublic(BaseModel):
    id: int
    name: str
    endpoint_id: int
    endpoint_name: str
    enabled: bool
    types: list[str]
    phases: list[str]
    categories: list[str]
    wards: list[str]
    device_kinds: list[str]
    tags: list[str]
    devices: list[str]
    min_severity: str | None
    created_at: datetime
    updated_at: datetime
    updated_by: str

    @classmethod
    def of(cls, row: RelayRoute, endpoint_name: str) -> "RoutePublic":
        return cls(id=row.id, name=row.name, endpoint_id=row.endpoint_id,  # type: ignore[attr-defined]
                   endpoint_name=endpoint_name, enabled=row.enabled,
                   **{f: getattr(row, f) for f in FILTERS}, created_at=row.created_at,
                   updated_at=row.updated_at, updated_by=row.updated_by)


class RouteList(BaseModel):
    items: list[RoutePublic]
    total: int


async def _route(route_id: int) -> RelayRoute:
    row = await RelayRoute.get_or_none(id=route_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no relay route {route_id}")
    return row


async def _endpoint_named(endpoint_id: int) -> str:
    endpoint = await RelayEndpoint.get_or_none(id=endpoint_id)
    if endpoint is None:
        raise _unprocessable(f"endpoint_id: no relay endpoint {endpoint_id}")
    return endpoint.name


BAD_ROUTE: dict[int | str, dict[str, Any]] = {409: answer("another route has that name")}


@router.get("/routes")
async def list_routes(_: Viewer, endpoint: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> RouteList:
    """Routes by name (of one endpoint with `endpoint`)."""
    query = RelayRoute.all() if endpoint is None else RelayRoute.filter(endpoint_id=endpoint)
    rows = await query.order_by("name").limit(LISTED)
    names = dict(await RelayEndpoint.all().values_list("id", "name"))
    return RouteList(items=[RoutePublic.of(r, str(names.get(r.endpoint_id, ""))) for r in rows],  # type: ignore[attr-defined]
                     total=await query.count())


@router.post("/routes", status_code=status.HTTP_201_CREATED, responses=BAD_ROUTE)
async def create_route(body: RouteCreate, audit: Admin, runtime: RuntimeDep) -> RoutePublic:
    endpoint_name = await _endpoint_named(body.endpoint_id)
    await _name_free(RelayRoute, body.name)
    try:
        row = await RelayRoute.create(**body.model_dump(), updated_by=audit.actor)
    except IntegrityError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the name {body.name!r} is taken") from err
    await _changed(runtime)
    await audit("relay.route.create", row.name, {"id": row.id, **body.model_dump(exclude={"name"})})
    return RoutePublic.of(row, endpoint_name)


@router.get("/routes/{route_id}")
async def get_route(route_id: RowId, _: Viewer) -> RoutePublic:
    row = await _route(route_id)
    return RoutePublic.of(row, await _endpoint_named(row.endpoint_id))  # type: ignore[attr-defined]


@router.patch("/routes/{route_id}", responses=BAD_ROUTE)
async def update_route(route_id: RowId, body: RouteUpdate, audit: Admin, runtime: RuntimeDep) -> RoutePublic:
    row = await _route(route_id)
    changes = body.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key != "min_severity":
            raise _unprocessable(f"{key} cannot be null")
    if not changes:
        raise _unprocessable("nothing to update")
    endpoint_id: int = changes.get("endpoint_id") or row.endpoint_id  # type: ignore[attr-defined]
    endpoint_name = await _endpoint_named(endpoint_id)
    if "name" in changes:
        await _name_free(RelayRoute, changes["name"], keep=row.id)
    for key, value in changes.items():
        setattr(row, key, value)
    row.updated_by = audit.actor
    try:
        await row.save()
    except IntegrityError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the name {row.name!r} is taken") from err
    await _changed(runtime)
    await audit("relay.route.update", row.name, {"id": row.id, **changes})
    return RoutePublic.of(row, endpoint_name)


@router.delete("/routes/{route_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_route(route_id: RowId, audit: Admin, runtime: RuntimeDep) -> Response:
    """The route; deliveries it already queued stay."""
    row = await _route(route_id)
    await row.delete()
    await _changed(runtime)
    await audit("relay.route.delete", row.name, {"id": route_id})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- deliveries --------------------------------------------------------------------------------

class DeliveryPublic(BaseModel):
    id: int
    endpoint_id: int
    device_id: str
    message_id: str = Field(description="the webhook-id (the same on every retry and replay)")
    event_type: str | None
    event_phase: str | None
    event_at: str | None
    snapshot_sha256: str | None
    status: DeliveryStatus
    attempts: int
    next_at: datetime
    created_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None = Field(description="HTTP status or MQTT reason code of the last attempt")
    last_error: str | None
    done_at: datetime | None = Field(description="delivered or dead-lettered")

    @classmethod
    def of(cls, row: RelayDelivery) -> "DeliveryPublic":
        data = row.payload.get("data") if isinstance(row.payload, dict) else None
        event = data.get("event") if isinstance(data, dict) else None
        event = event if isinstance(event, dict) else {}

        def text(key: str) -> str | None:
            value = event.get(key)
            return str(value) if value is not None else None

        return cls(id=row.id, endpoint_id=row.endpoint_id, device_id=row.device_id,
                   message_id=row.message_id, event_type=text("type"), event_phase=text("phase"),
                   event_at=text("at"), snapshot_sha256=row.snapshot_sha256, status=row.status,
                   attempts=row.attempts, next_at=row.next_at, created_at=row.created_at,
                   last_attempt_at=row.last_attempt_at, last_status=row.last_status, last_error=row.last_error,
                   done_at=row.done_at)


class DeliveryDetail(DeliveryPublic):
    payload: dict[str, Any] = Field(description="the message as stored (snapshot url and available are added "
                                                "at each attempt)")


class DeliveryPage(BaseModel):
    items: list[DeliveryPublic]
    next_before: int | None = Field(description="pass as `before` for the next (older) page; null: no more")


async def list_deliveries_of(endpoint: int | None, state: DeliveryStatus | None, device: str | None, limit: int,
                             before: int | None) -> DeliveryPage:
    query = RelayDelivery.all()
    if endpoint is not None:
        query = query.filter(endpoint_id=endpoint)
    if state is not None:
        query = query.filter(status=state)
    if device is not None:
        query = query.filter(device_id=device)
    if before is not None:
        query = query.filter(id__lt=before)
    rows = await query.order_by("-id").limit(limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveryPage(items=[DeliveryPublic.of(r) for r in rows], next_before=rows[-1].id if more else None)


@router.get("/deliveries")
async def list_deliveries(
    _: Viewer,
    endpoint: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="an endpoint's id")] = None,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    device: Annotated[str | None, Query(pattern=f"^{DEVICE_ID_PATTERN}$")] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="only ids below this (paging)")] = None,
) -> DeliveryPage:
    """Deliveries, newest first; page with `before` = the last answer's `next_before`."""
    return await list_deliveries_of(endpoint, status_, device, limit, before)


DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]


async def _delivery(delivery_id: int) -> RelayDelivery:
    row = await RelayDelivery.get_or_none(id=delivery_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no relay delivery {delivery_id}")
    return row


@router.get("/deliveries/{delivery_id}")
async def get_delivery(delivery_id: DeliveryId, _: Viewer) -> DeliveryDetail:
    row = await _delivery(delivery_id)
    return DeliveryDetail(**DeliveryPublic.of(row).model_dump(), payload=row.payload)


@router.post("/deliveries/{delivery_id}/replay", responses={409: answer("the delivery is not dead")})
async def replay_delivery(delivery_id: DeliveryId, audit: Admin, runtime: RuntimeDep) -> DeliveryPublic:
    """A dead delivery becomes pending again (attempts reset, same webhook-id, due now)."""
    row = await _delivery(delivery_id)
    if row.status != DeliveryStatus.DEAD:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"only a dead delivery is replayed (this one is {row.status.value})")
    await outbox.replay([row.id])
    _nudge(runtime)
    endpoint = await RelayEndpoint.get(id=row.endpoint_id)
    await audit("relay.delivery.replay", endpoint.name, {"delivery": row.id, "message_id": row.message_id,
                                                         "device": row.device_id})
    return DeliveryPublic.of(await _delivery(delivery_id))
