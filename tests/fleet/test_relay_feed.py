"""The live feed (docs/relay.md, "Live feed"): a real fleet, events put through the real ingest by a
device publishing to Mosquitto, read as Server-Sent Events over real HTTP."""

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.auth.roles import Role
from fleet.relay.feed import FeedHub
from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_settings, running_fleet, token_for
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

FEED = "/api/relay/feed"
READ_BOUND_S = 20  # a stream that has not said what the test waits for by then has failed
SHA = hashlib.sha256(b"a frame").hexdigest()


@dataclass
class Sse:
    event: str
    id: str | None
    data: Any


class Stream:
    """One open feed: its SSE events as they come (comments, i.e. keep-alives, skipped)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self) -> Sse:
        event, ident, data = "message", None, list[str]()
        async with asyncio.timeout(READ_BOUND_S):
            async for line in self._lines:
                if not line:
                    if data:
                        return Sse(event, ident, json.loads("\n".join(data)))
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event = value
                elif name == "id":
                    ident = value
                elif name == "data":
                    data.append(value)
        raise EOFError("the stream ended")

    async def take(self, count: int) -> list[Sse]:
        return [await self.next() for _ in range(count)]


@asynccontextmanager
async def opened(http: httpx.AsyncClient, token: str | None = None, params: Any = None,
                 headers: dict[str, str] | None = None) -> AsyncIterator[Stream]:
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    async with http.stream("GET", FEED, params=params, headers=sent, timeout=httpx.Timeout(30, read=None)) as r:
        assert r.status_code == 200, (await r.aread()).decode()
        assert r.headers["content-type"].startswith("text/event-stream")
        yield Stream(r)


@asynccontextmanager
async def feed_fleet(tmp_path: Path, mosquitto: Mosquitto, database_url: str | None = None,
                     **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A fleet on SQLite (or `database_url`) polling for the feed every 50 ms unless told otherwise."""
    settings.setdefault("feed_poll_s", 0.05)
    async with running_fleet(fleet_settings(database_url or f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url,
                                            snapshot_dir=tmp_path / "snapshots", **settings)) as http:
        yield http


def hub_of(http: httpx.AsyncClient) -> FeedHub:
    hub = http.app.state.runtime.feed  # type: ignore[attr-defined]
    assert isinstance(hub, FeedHub)
    return hub


async def register(http: httpx.AsyncClient, device_id: str, kind: str, ward: str, tags: list[str]) -> None:
    made = await http.post("/api/devices", json={"id": device_id, "kind": kind, "ward": ward, "tags": tags,
                                                 "name": f"Cam {device_id}"})
    assert made.status_code == 201, made.text


def event_with(dev: ScriptedDevice, type_: str, phase: str = "once", category: str = "security",
               sha256: str | None = None, size: int = 0, **data: Any) -> int:
    """Publish one event as the device (`sha256`: with a snapshot reference); its seq."""
    extra: dict[str, Any] = {"snapshot": {"ref": f"s/{sha256}.jpg", "sha256": sha256, "bytes": size}} if sha256 else {}
    return dev.send("event", id=f"{type_}-{uuid.uuid4().hex[:6]}", type=type_, phase=phase, category=category,
                    data=data, **extra)


def event(dev: ScriptedDevice, type_: str, phase: str = "once", category: str = "security",
          snapshot: bool = False, **data: Any) -> int:
    return event_with(dev, type_, phase, category, SHA if snapshot else None, 7, **data)


async def stored(http: httpx.AsyncClient, device_id: str, count: int) -> None:
    async def enough() -> bool:
        response = await http.get(f"/api/devices/{device_id}/events")
        return response.status_code == 200 and len(response.json()) >= count

    await async_wait_for(enough, what=f"{count} events of {device_id} stored")


async def test_events_reach_the_stream_in_order_with_the_relayed_fields(
        tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with feed_fleet(tmp_path, mosquitto, database_url) as http:
        await register(http, "cam-a", "pi", "ben-nghe", ["junction"])
        await register(http, "node-b", "esp32", "da-kao", [])
        a = ScriptedDevice(mosquitto.port, "cam-a", ses=11)
        b = ScriptedDevice(mosquitto.port, "node-b", ses=22)
        async with opened(http, params={"last_event_id": 0}) as stream:
            event(a, "motion", "start", snapshot=True, camera="cam1")
            event(b, "lamp_failure", category="other")
            event(a, "motion", "end")
            event(a, "safe_mode", category="other")
            event(a, "alarm", category="other", severity="minor")  # its own severity wins
            got = await stream.take(5)
        assert all(e.event == "device.event" for e in got)
        ids = [int(str(e.id)) for e in got]
        assert ids == sorted(ids) and len(set(ids)) == 5
        first = got[0].data
        assert first["device"] == {"id": "cam-a", "kind": "pi", "name": "Cam cam-a", "ward": "ben-nghe", "site": "",
                                   "tags": ["junction"], "lat": None, "lon": None}
        assert first["event"]["type"] == "motion" and first["event"]["phase"] == "start"
        assert first["event"]["category"] == "security" and first["event"]["severity"] == "info"
        assert first["event"]["data"] == {"camera": "cam1"} and first["event"]["at"].endswith("Z")
        assert first["stream"] == {"epoch": 0, "ses": 11, "seq": 0}
        # the admin may see snapshots: the plain path; the image is not held yet
        assert first["snapshot"] == {"sha256": SHA, "bytes": 7, "type": "image/jpeg", "available": False,
                                     "url": f"/api/snapshots/{SHA}"}
        assert got[1].data["device"]["id"] == "node-b" and got[1].data["event"]["severity"] == "major"
        assert got[2].data["snapshot"] is None and got[2].data["stream"]["seq"] == 1
        assert [e.data["event"]["severity"] for e in got[3:]] == ["critical", "minor"]
        # the same rows as the API's events (newest first there)
        listed = (await http.get("/api/devices/cam-a/events")).json()
        assert [e["event_id"] for e in reversed(listed)] == [e.data["event"]["id"] for e in got if
                                                            e.data["device"]["id"] == "cam-a"]
        # the poller runs only while someone listens
        await async_wait_for(lambda: _stopped(hub_of(http)), what="the poller stopped")
        assert hub_of(http).reserved == 0
        a.close()
        b.close()


async def _stopped(hub: FeedHub) -> bool:
    return not hub.polling and not hub.clients


async def test_filters_and_refusals(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with feed_fleet(tmp_path, mosquitto, database_url) as http:
        await register(http, "cam-a", "pi", "ben-nghe", ["junction"])
        await register(http, "node-b", "esp32", "da-kao", ["park"])
        a = ScriptedDevice(mosquitto.port, "cam-a", ses=1)
        b = ScriptedDevice(mosquitto.port, "node-b", ses=2)
        event(a, "motion", "start")  # info, security, ben-nghe, pi, junction
        event(b, "lamp_failure", category="other")  # major, da-kao, esp32, park
        event(a, "playback", result="failed", category="other")  # warning
        event(b, "day_burning", category="other")  # minor
        event(a, "safe_mode", category="other")  # critical
        await stored(http, "cam-a", 3)
        await stored(http, "node-b", 2)
        cases: list[tuple[list[tuple[str, str]], list[str]]] = [
            ([("ward", "ben-nghe")], ["motion", "playback", "safe_mode"]),
            ([("kind", "esp32")], ["lamp_failure", "day_burning"]),
            ([("tag", "park"), ("tag", "nothing")], ["lamp_failure", "day_burning"]),
            ([("device", "cam-a"), ("category", "other")], ["playback", "safe_mode"]),
            ([("type", "motion"), ("type", "safe_mode")], ["motion", "safe_mode"]),
            ([("phase", "start")], ["motion"]),
            ([("min_severity", "major")], ["lamp_failure", "safe_mode"]),
            ([("min_severity", "warning"), ("ward", "da-kao")], ["lamp_failure", "day_burning"]),
        ]
        for params, types in cases:
            # the backlog: the newest stored events that pass (here all five are stored already)
            async with opened(http, params=[*params, ("backlog", "50")]) as stream:
                got = await stream.take(len(types))
            assert [e.data["event"]["type"] for e in got] == types, params
        # live too: a filter drops what does not pass
        async with opened(http, params={"kind": "pi", "min_severity": "critical"}) as stream:
            await async_wait_for(lambda: _has_clients(hub_of(http)), what="the stream joined")
            event(b, "safe_mode", category="other")
            event(a, "motion", "end")
            event(a, "disk_full", category="other", severity="critical")
            (only,) = await stream.take(1)
            assert only.data["event"]["type"] == "disk_full" and only.data["device"]["id"] == "cam-a"
        for bad in ({"phase": "middle"}, {"category": "fire"}, {"min_severity": "huge"}, {"kind": "laptop"},
                    {"device": "Not A Device"}, {"tag": "UPPER"}, {"type": "x" * 65}, {"wards": "typo"},
                    {"last_event_id": -1}, {"backlog": 10_001}, {"ward": ["w"] * 51}):
            response = await http.get(FEED, params=bad)
            assert response.status_code == 422, (bad, response.text)
            assert "text/event-stream" not in response.headers["content-type"]
        response = await http.get(FEED, headers={"Last-Event-ID": "abc"})
        assert response.status_code == 422 and "Last-Event-ID" in response.text
        # the page checks its URL's filters with the same model, and opens no feed with bad ones
        page = await http.get("/live", params=[("phase", "middle"), ("ward", "ben-nghe")])
        assert page.status_code == 422 and 'id="filter-errors"' in page.text and "data-feed" not in page.text
        page = await http.get("/live", params=[("ward", "ben-nghe"), ("ward", "da-kao"), ("min_severity", "major")])
        assert page.status_code == 200
        assert 'data-feed="/api/relay/feed?ward=ben-nghe&amp;ward=da-kao&amp;min_severity=major&amp;backlog=60"' \
            in page.text
        a.close()
        b.close()


async def _has_clients(hub: FeedHub) -> bool:
    return bool(hub.clients)


async def test_last_event_id_resumes_with_exactly_the_missed_events(
        tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with feed_fleet(tmp_path, mosquitto, database_url) as http:
        await register(http, "cam-a", "pi", "ben-nghe", [])
        a = ScriptedDevice(mosquitto.port, "cam-a", ses=5)
        async with opened(http, params={"last_event_id": 0}) as stream:
            for _ in range(3):
                event(a, "motion", "update")
            seen = await stream.take(3)
        last = str(seen[-1].id)
        for _ in range(4):  # while nobody listens
            event(a, "motion", "update")
        await stored(http, "cam-a", 7)
        # the header (what EventSource sends) wins over the query parameter
        async with opened(http, params={"last_event_id": 0}, headers={"Last-Event-ID": last}) as stream:
            missed = await stream.take(4)
            event(a, "motion", "end")  # and then live, after the replay
            (live,) = await stream.take(1)
        assert [e.data["stream"]["seq"] for e in missed] == [3, 4, 5, 6]
        assert all(int(str(e.id)) > int(last) for e in missed)
        assert live.data["stream"]["seq"] == 7 and live.data["event"]["phase"] == "end"
        a.close()


async def test_a_long_absence_gets_a_gap_then_the_newest(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with feed_fleet(tmp_path, mosquitto, feed_replay_max=4) as http:
        await register(http, "cam-a", "pi", "ben-nghe", [])
        a = ScriptedDevice(mosquitto.port, "cam-a", ses=5)
        for _ in range(7):
            event(a, "motion", "update")
        await stored(http, "cam-a", 7)
        async with opened(http, headers={"Last-Event-ID": "0"}) as stream:
            gap, *newest = await stream.take(5)
        assert gap.event == "gap" and gap.id is None and gap.data == {"skipped": 3, "after": 0}
        assert [e.data["stream"]["seq"] for e in newest] == [3, 4, 5, 6]
        a.close()


async def test_a_client_that_falls_behind_gets_overflow_and_is_closed(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # a queue of one event and a poller that reads every 2 s: the 30 events published at once
    # come to the poller in a few reads of many rows each, more than the queue holds
    async with feed_fleet(tmp_path, mosquitto, feed_queue_max=1, feed_poll_s=2.0) as http:
        await register(http, "cam-a", "pi", "ben-nghe", [])
        a = ScriptedDevice(mosquitto.port, "cam-a", ses=5)
        async with opened(http, params={"last_event_id": 0}) as stream:
            await async_wait_for(lambda: _has_clients(hub_of(http)), what="the stream joined")
            for _ in range(30):
                event(a, "motion", "update")
            got: list[Sse] = []
            while not got or got[-1].event != "overflow":
                got.append(await stream.next())
            with pytest.raises(EOFError):  # and then the server closes the stream
                await stream.next()
        overflow = got[-1]
        delivered = [e for e in got if e.event == "device.event"]
        assert len(delivered) < 30
        assert overflow.data == {"last_event_id": int(str(delivered[-1].id)) if delivered else 0, "queue_max": 1}
        await stored(http, "cam-a", 30)
        # it resumes where it was cut off and gets the rest, once each
        resume = str(delivered[-1].id) if delivered else "0"
        async with opened(http, headers={"Last-Event-ID": resume}) as stream:
            rest = await stream.take(30 - len(delivered))
        assert [e.data["stream"]["seq"] for e in delivered + rest] == list(range(30))
        await async_wait_for(lambda: _stopped(hub_of(http)), what="the poller stopped")
        a.close()


async def test_clients_beyond_the_limit_get_503(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with feed_fleet(tmp_path, mosquitto, feed_max_clients=2) as http:
        async with opened(http), opened(http):
            refused = await http.get(FEED)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "10"
            assert "FLEET_FEED_MAX_CLIENTS" in refused.json()["detail"]
        # a disconnect gives the place back
        await async_wait_for(lambda: _released(hub_of(http)), what="the places given back")
        async with opened(http) as stream:
            assert stream.response.status_code == 200


async def _released(hub: FeedHub) -> bool:
    return hub.reserved == 0 and not hub.clients


async def test_snapshot_url_only_for_those_who_may_see_snapshots(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with feed_fleet(tmp_path, mosquitto) as http:
        await register(http, "cam-a", "pi", "ben-nghe", [])
        a = ScriptedDevice(mosquitto.port, "cam-a", ses=5)
        event(a, "motion", "start", snapshot=True)
        await stored(http, "cam-a", 1)
        operator = await token_for(http, Role.IOC_OPERATOR)
        reader = await token_for(http, Role.READ_ONLY)
        async with opened(http, operator, params={"last_event_id": 0}) as stream:
            (seen,) = await stream.take(1)
        assert seen.data["snapshot"]["url"] == f"/api/snapshots/{SHA}"
        async with opened(http, reader, params={"last_event_id": 0}) as stream:
            (seen,) = await stream.take(1)
        assert seen.data["snapshot"]["url"] is None and seen.data["snapshot"]["sha256"] == SHA
        async with httpx.AsyncClient(base_url=str(http.base_url)) as nobody:  # no token, no cookie
            anonymous = await nobody.get(FEED)
        assert anonymous.status_code == 401
        a.close()
