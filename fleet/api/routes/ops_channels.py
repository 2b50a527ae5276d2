"""Notification channels (/api/ops/channels; docs/ops.md, "Notifications"): where alerts are sent.

Reading needs READ; changes and test messages need ALERTS. The webhook secret is write-only: an
answer says `secret_set`, never the secret.
"""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from fleet.api.deps import LOGGED_IN, Auditor, Reader, RowId, RuntimeDep, acting
from fleet.api.errors import ValidationErrorPublic, answer
from fleet.auth.roles import Permission
from fleet.ops import channels
from fleet.ops.channels import ChannelConflict, ChannelError
from fleet.ops.models import Notification, NotificationChannel, Severity
from fleet.ops.notify import HELD, PENDING, SENT, WINDOW

router = APIRouter(prefix="/api/ops/channels", tags=["ops"], dependencies=[LOGGED_IN])
RECENT = 20

Target = Annotated[dict[str, Any], Field(description='webhook: {"url": "https://..."}; email: {"to": ["a@b.org"]} '
                                                     f"(1 to {channels.RECIPIENTS_MAX})")]
Secret = Annotated[str, Field(max_length=200, description="webhook only, required there: 'whsec_' + base64 of "
                                                          "24 to 64 random bytes; write-only")]


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="rules name channels by this")
    kind: Literal["webhook", "email"]
    target: Target
    secret: Secret | None = None
    min_severity: Severity = Field(default=Severity.WARNING, description="alerts less severe are not sent here")
    rate_per_hour: int = Field(default=20, ge=1, le=channels.RATE_MAX,
                               description="messages per rolling hour; beyond: one digest when the hour allows")
    enabled: bool = True


class ChannelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=64,
                             description="a new name is written into the rules that named the old one")
    target: Target | None = None
    secret: Secret | None = None
    min_severity: Severity | None = None
    rate_per_hour: int | None = Field(default=None, ge=1, le=channels.RATE_MAX)
    enabled: bool | None = None


class ChannelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    kind: str
    target: dict[str, Any]
    secret_set: bool = Field(description="whether a signing secret is stored (it is never shown)")
    min_severity: Severity
    rate_per_hour: int
    enabled: bool
    created_at: datetime
    updated_by: str

    @classmethod
    def of(cls, row: NotificationChannel) -> "ChannelPublic":
        return cls(id=row.id, name=row.name, kind=row.kind, target=row.target, secret_set=bool(row.secret),
                   min_severity=row.min_severity, rate_per_hour=row.rate_per_hour, enabled=row.enabled,
                   created_at=row.created_at, updated_by=row.updated_by)


class ChannelList(BaseModel):
    items: list[ChannelPublic]
    total: int


class NotificationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    state: str = Field(description="pending | held (a digest waiting for the hourly rate) | sent | failed")
    digest: bool
    events: int = Field(description="alert changes it carries")
    attempts: int
    created_at: datetime
    next_try_at: datetime | None
    sent_at: datetime | None
    last_error: str | None


class ChannelDetail(ChannelPublic):
    outbox: dict[str, int] = Field(description="messages pending, held, failed; sent_last_hour")
    recent: list[NotificationPublic] = Field(description=f"its last {RECENT} messages, newest first")


class TestResult(BaseModel):
    ok: bool
    detail: str = Field(description="what happened: the receiver's answer, or why it failed")


def _failed(err: Exception) -> HTTPException:
    if isinstance(err, ChannelConflict):
        return HTTPException(status.HTTP_409_CONFLICT, str(err))
    if isinstance(err, LookupError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(err))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err))


async def _channel(channel_id: int) -> NotificationChannel:
    row = await NotificationChannel.get_or_none(id=channel_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no channel {channel_id}")
    return row


BAD_INPUT: dict[int | str, dict[str, Any]] = {422: {"model": ValidationErrorPublic,
                   "description": "a bad target (URL scheme, e-mail address), secret, severity or rate"}}


@router.get("")
async def list_channels(_: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> ChannelList:
    rows = await NotificationChannel.all().order_by("name").offset(offset).limit(limit)
    return ChannelList(items=[ChannelPublic.of(r) for r in rows], total=await NotificationChannel.all().count())


@router.post("", status_code=status.HTTP_201_CREATED,
             responses={**BAD_INPUT, 409: answer("a channel with that name exists")})
async def create_channel(body: ChannelCreate,
                         audit: Annotated[Auditor, acting(Permission.ALERTS)]) -> ChannelPublic:
    try:
        row = await channels.create(name=body.name, kind=body.kind, target=body.target, secret=body.secret,
                                    min_severity=body.min_severity.value, rate_per_hour=body.rate_per_hour,
                                    enabled=body.enabled, by=audit.actor)
    except (ChannelError, ChannelConflict) as err:
        raise _failed(err) from err
    await audit("ops.channel.create", row.name, {"kind": row.kind, "target": row.target})
    return ChannelPublic.of(row)


@router.get("/{channel_id}")
async def get_channel(channel_id: RowId, _: Reader) -> ChannelDetail:
    row = await _channel(channel_id)
    now = datetime.now(UTC)
    outbox = {state: await Notification.filter(channel_id=row.id, state=state).count()
              for state in (PENDING, HELD, "failed")}
    outbox["sent_last_hour"] = await Notification.filter(channel_id=row.id, state=SENT,
                                                         sent_at__gt=now - WINDOW).count()
    recent = [NotificationPublic(id=n.id, state=n.state, digest=n.digest, events=len(n.event_ids or []),
                                 attempts=n.attempts, created_at=n.created_at, next_try_at=n.next_try_at,
                                 sent_at=n.sent_at, last_error=n.last_error)
              for n in await Notification.filter(channel_id=row.id).order_by("-id").limit(RECENT)]
    return ChannelDetail(**ChannelPublic.of(row).model_dump(), outbox=outbox, recent=recent)


@router.patch("/{channel_id}", responses={**BAD_INPUT, 409: answer("another channel has that name")})
async def update_channel(channel_id: RowId, body: ChannelUpdate,
                         audit: Annotated[Auditor, acting(Permission.ALERTS)]) -> ChannelPublic:
    # null is "no change" for every field but the secret (null there: no secret, refused for a webhook)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True, mode="json").items()
               if v is not None or k == "secret"}
    try:
        row = await channels.update(channel_id, changes, by=audit.actor)
    except (ChannelError, ChannelConflict, LookupError) as err:
        raise _failed(err) from err
    await audit("ops.channel.update", row.name, {k: ("(set)" if k == "secret" else v) for k, v in changes.items()})
    return ChannelPublic.of(row)


@router.delete("/{channel_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={409: answer("rules still send to this channel")})
async def delete_channel(channel_id: RowId, audit: Annotated[Auditor, acting(Permission.ALERTS)]) -> Response:
    try:
        row = await channels.delete(channel_id)
    except (ChannelConflict, LookupError) as err:
        raise _failed(err) from err
    await audit("ops.channel.delete", row.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{channel_id}/test")
async def test_channel(channel_id: RowId, runtime: RuntimeDep,
                       audit: Annotated[Auditor, acting(Permission.ALERTS)]) -> TestResult:
    """Send a test message to the channel now (not through the outbox, not counted in its rate).
    200 either way: `ok` and `detail` say what happened."""
    row = await _channel(channel_id)
    result = await channels.send_test(row, runtime.settings)
    await audit("ops.channel.test", row.name, result)
    return TestResult(**result)
