"""`GET /api/relay/feed`: the live feed of stored device events as Server-Sent Events
(docs/relay.md, "Live feed"; the poller and its bounds are in fleet/relay/feed.py)."""

import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Header, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from contract import DEVICE_ID_PATTERN
from fleet.api.deps import LOGGED_IN, Reader, RuntimeDep
from fleet.api.schemas import TAG_PATTERN, Kind
from fleet.auth.roles import Permission
from fleet.relay.feed import FeedClient, FeedHub, FeedItem, recent, replay
from fleet.relay.message import SEVERITIES
from fleet.relay.routing import Rule

router = APIRouter(prefix="/api/relay", tags=["relay"], dependencies=[LOGGED_IN])

FEED_PATH = "/api/relay/feed"
VALUES_MAX = 50  # values of one filter
KEEP_ALIVE_S = 15  # a comment line this often, so proxies keep an idle stream open
RECONNECT_MS = 2000  # the `retry` a browser's EventSource waits before it reconnects
RETRY_AFTER_S = 10  # told to a client refused because the feed has all the clients it takes
EVENT_ID_MAX = 2**63 - 1

EventType = Annotated[str, Field(min_length=1, max_length=64)]
Phase = Literal["start", "update", "end", "once"]
Category = Literal["security", "traffic_safety", "other"]
Ward = Annotated[str, Field(min_length=1, max_length=80)]
Tag = Annotated[str, Field(pattern=TAG_PATTERN)]
DeviceName = Annotated[str, Field(pattern=f"^{DEVICE_ID_PATTERN}$")]
Severity = Literal["critical", "major", "minor", "warning", "info"]
assert get_args(Severity) == SEVERITIES  # the relay's own list, most severe first


class FeedQuery(BaseModel):
    """The feed's filters, as a route's (docs/relay.md, "Routes"): each list is "any of", repeatable
    (`?ward=a&ward=b`), empty no condition; and where to start."""

    model_config = ConfigDict(extra="forbid")

    type: list[EventType] = Field(default=[], max_length=VALUES_MAX, description="event type, e.g. motion")
    phase: list[Phase] = Field(default=[], max_length=VALUES_MAX)
    category: list[Category] = Field(default=[], max_length=VALUES_MAX)
    ward: list[Ward] = Field(default=[], max_length=VALUES_MAX, description="the device's ward")
    kind: list[Kind] = Field(default=[], max_length=VALUES_MAX, description="the device's kind")
    tag: list[Tag] = Field(default=[], max_length=VALUES_MAX, description="a tag of the device")
    device: list[DeviceName] = Field(default=[], max_length=VALUES_MAX, description="device id")
    min_severity: Severity | None = Field(default=None, description="this severity or a more severe one")
    last_event_id: int | None = Field(default=None, ge=0, le=EVENT_ID_MAX,
                                      description="resume after this event id (the Last-Event-ID header wins)")
    backlog: int = Field(default=0, ge=0, le=10_000,
                         description="with no Last-Event-ID: first the newest this many stored events that pass "
                                     "(at most FLEET_FEED_REPLAY_MAX)")

    def rule(self) -> Rule:
        return Rule(endpoint_id=0, types=frozenset(self.type), phases=frozenset(self.phase),
                    categories=frozenset(self.category), wards=frozenset(self.ward),
                    device_kinds=frozenset(self.kind), tags=frozenset(self.tag), devices=frozenset(self.device),
                    min_severity=self.min_severity)


class FeedResponse(EventSourceResponse):
    """The stream; its place among FLEET_FEED_MAX_CLIENTS is given back however it ends (a
    disconnect, an overflow, a HEAD that never streams, the server stopping)."""

    def __init__(self, hub: FeedHub, client: FeedClient, content: AsyncIterator[ServerSentEvent]) -> None:
        super().__init__(content, ping=KEEP_ALIVE_S)
        self.hub = hub
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.hub.leave(self.client)
            self.hub.release()


def _event(item: FeedItem, with_url: bool) -> ServerSentEvent:
    return ServerSentEvent(item.json(with_url), id=str(item.id), event="device.event", retry=RECONNECT_MS)


async def _events(hub: FeedHub, client: FeedClient, after: int | None,
                  backlog: int) -> AsyncIterator[ServerSentEvent]:
    try:
        start = await hub.join(client)
        sent = start if after is None else after
        if backlog:
            for item in await recent(client.rule, start, backlog):
                yield _event(item, client.with_url)
        if after is not None and after < start:
            skipped, items = await replay(client.rule, after, start, hub.replay_max)
            if skipped:
                yield ServerSentEvent(json.dumps({"skipped": skipped, "after": after}), event="gap", retry=RECONNECT_MS)
            for item in items:
                yield _event(item, client.with_url)
            sent = max(after, start)
        while True:
            batch = await client.next()
            if batch is None:
                yield ServerSentEvent(json.dumps({"last_event_id": sent, "queue_max": client.limit}),
                                      event="overflow")
                return
            for item in batch:
                if item.id > sent:
                    yield _event(item, client.with_url)
                    sent = item.id
    finally:
        hub.leave(client)


def _event_id(header: str | None, query: int | None) -> int | None:
    """Where to resume: the Last-Event-ID header (what a browser's EventSource sends by itself on
    a reconnection) over the `last_event_id` parameter."""
    if header is None or not header.strip():
        return query
    text = header.strip()
    if not text.isdigit() or int(text) > EVENT_ID_MAX:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "Last-Event-ID must be the id of an event this feed sent (a whole number)")
    return int(text)


@router.get(
    "/feed",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "Server-Sent Events: `device.event` (id: the event row's id; data: the "
                                    "`data` object of a relayed message), `gap` and `overflow` (docs/relay.md)"},
               503: {"description": "the feed has FLEET_FEED_MAX_CLIENTS clients; `Retry-After` says when "
                                    "to try again"}},
)
async def feed(
    principal: Reader,
    runtime: RuntimeDep,
    query: Annotated[FeedQuery, Query()],
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
) -> EventSourceResponse:
    """Stored device events as they arrive, oldest first; with `Last-Event-ID` (or
    `last_event_id`), first those after that id (at most FLEET_FEED_REPLAY_MAX, the newest, after a
    `gap` event saying how many were skipped). The snapshot's `url` (`/api/snapshots/{sha256}`) is
    given to people with the `snapshots` permission only, else null. A client whose queue
    (FLEET_FEED_QUEUE_MAX) fills is sent `overflow` and closed: it resumes with Last-Event-ID."""
    after = _event_id(last_event_id_header, query.last_event_id)
    hub = runtime.feed
    if hub is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the live feed does not run in this process")
    if not hub.admit():
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"the live feed has its {hub.max_clients} clients (FLEET_FEED_MAX_CLIENTS); try again",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    client = hub.client(query.rule(), with_url=principal.may(Permission.SNAPSHOTS))
    backlog = min(query.backlog, hub.replay_max) if after is None else 0
    return FeedResponse(hub, client, _events(hub, client, after, backlog))
