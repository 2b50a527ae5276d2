"""Child devices in the fleet, end to end (issue 16 part 3): a real Pi agent with role `children`
watching RTSP streams served by ffmpeg on loopback (one live, one frozen, one killed), a TCP port
that never speaks RTSP, a WS-Discovery responder; the real fleet storing children, showing them
under their parent, adopting and forgetting, and its alert rules firing on them."""

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.agent import Agent
from edge.config import parse_config
from fleet.models import Device
from tests.edge.roles.camera_fixtures import crossing, quiet_scene, street_fixture, write_clip  # noqa: F401
from tests.edge.roles.camera_scenes import Image
from tests.edge.roles.rtsp_server import RtspServer
from tests.edge.roles.wsd_responder import WsdResponder
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

# the rule kinds on child devices, driven here (tests/system/test_alerts_e2e.py counts them)
CHILD_RULES = {"child_offline", "child_frozen", "child_no_frames"}
QUICK = {"period_s": 0.5, "timeout_s": 1, "down_after": 2, "frame_within_s": 3, "frozen_after_s": 2}
Street = tuple[Image, list[Image]]


@pytest.fixture
def streams(street: Street, tmp_path: Path) -> Iterator[tuple[RtspServer, RtspServer]]:
    scene = quiet_scene(street, 4.0, objects=[crossing(street, t0=0.5, t1=2.5)], noise_sigma=3.0)
    moving = write_clip((image for _, image in scene), tmp_path / "street.mp4", gop=12)
    still = write_clip((street[0] for _ in range(50)), tmp_path / "still.mp4", gop=25)
    servers = []
    for name, clip in (("live", moving), ("still", still)):
        (tmp_path / name).mkdir()
        servers.append(RtspServer(clip, tmp_path / name))
        servers[-1].start()
    yield servers[0], servers[1]
    for server in servers:
        server.stop()


@pytest.fixture
def mute() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()


@asynccontextmanager
async def pi(device_id: str, broker: Mosquitto, state: Path, roles: dict[str, Any]) -> AsyncIterator[Agent]:
    config = parse_config({"device_id": device_id, "state_dir": str(state), "health_period_s": 1,
                           "shutdown_drain_s": 5, "roles": roles,
                           "broker": {"url": broker.url, "backoff_min_s": 0.05, "backoff_max_s": 0.5,
                                      "timeout_s": 5}})
    async with Agent(config) as agent:
        yield agent


async def children(http: httpx.AsyncClient, device_id: str) -> dict[str, dict[str, Any]]:
    got = await http.get(f"/api/devices/{device_id}/children")
    assert got.status_code == 200, got.text
    return {c["child_id"]: c for c in got.json()}


async def until_children(http: httpx.AsyncClient, device_id: str, test: Any, what: str,
                         within: float = 30) -> dict[str, dict[str, Any]]:
    async def check() -> dict[str, dict[str, Any]] | None:
        found = await children(http, device_id)
        return found if test(found) else None

    found = await async_wait_for(check, timeout=within, interval=0.2, what=what)
    assert found is not None
    return found


async def alert(http: httpx.AsyncClient, rule_id: int, device_id: str) -> dict[str, Any] | None:
    await http.app.state.runtime.ops.turn(datetime.now(UTC))  # type: ignore[attr-defined]
    got = await http.get("/api/ops/alerts", params={"device": device_id, "limit": 500})
    assert got.status_code == 200, got.text
    mine = [a for a in got.json()["items"] if a["rule_id"] == rule_id]
    return mine[0] if mine else None


async def test_children_stored_shown_adopted_forgotten_and_alerted(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, streams: tuple[RtspServer, RtspServer], mute: int,
        tmp_path: Path) -> None:
    http = fleet
    live, still = streams
    device_id = f"pi-kids-{uuid.uuid4().hex[:6]}"
    assert (await http.post("/api/devices", json={"id": device_id, "kind": "pi", "ward": "tan-phu"})).status_code == 201
    rules = {}
    for kind in sorted(CHILD_RULES):
        made = await http.post("/api/ops/rules", json={"name": f"test {kind}", "kind": kind, "severity": "major",
                                                       "params": {"for_s": 0}})
        assert made.status_code == 201, made.text
        rules[kind] = int(made.json()["id"])
    # the discovered device on another loopback address: a host the Pi already watches is never proposed
    room = socket.create_server(("127.0.0.2", 0))
    room_port = room.getsockname()[1]
    responder = WsdResponder(address="urn:uuid:7a1c0000-0000-4000-8000-0000000000aa", device_host="127.0.0.2",
                             device_port=room_port)
    responder.start()
    section = {"children": [
        {"id": "cam-live", "host": "127.0.0.1", "ports": [live.port], "rtsp_url": live.url, **QUICK},
        {"id": "cam-still", "host": "127.0.0.1", "ports": [still.port], "rtsp_url": still.url, **QUICK},
        {"id": "cam-mute", "host": "127.0.0.1", "ports": [mute], "rtsp_url": f"rtsp://127.0.0.1:{mute}/x", **QUICK},
    ], "discovery": {"target": responder.target, "every_s": 2, "wait_s": 0.5}}
    try:
        async with pi(device_id, mosquitto, tmp_path / "state", {"children": section}):
            found = await until_children(
                http, device_id, lambda f: {k: c["state"] for k, c in f.items()}
                == {"cam-live": "ok", "cam-still": "frozen", "cam-mute": "no_frames"}, "the three cameras judged")
            cam = found["cam-live"]
            assert cam["presence"] == "online" and cam["kind"] == "ip_camera" and cam["adopted"] is False
            assert cam["last_health"]["width"] == 640 and cam["last_health"]["fps"] > 0
            frozen = await async_wait_for(lambda: alert(http, rules["child_frozen"], device_id), timeout=15,
                                          what="child_frozen raised")
            assert frozen["value"] == {"children": ["cam-still"], "count": 1} and frozen["state"] == "open"
            mute_alert = await alert(http, rules["child_no_frames"], device_id)
            assert mute_alert is not None and mute_alert["value"]["children"] == ["cam-mute"]
            assert await alert(http, rules["child_offline"], device_id) is None

            # the device page shows them under their parent
            page = await http.get(f"/devices/{device_id}")
            assert page.status_code == 200 and "cam-still" in page.text and "frozen" in page.text

            # discovery: proposed, then adopted through the API; the Pi starts watching it
            proposals = await async_wait_for(
                lambda: _nonempty(http.get(f"/api/devices/{device_id}/children/proposals")), timeout=15,
                what="a proposal")
            assert proposals[0]["address"] == responder.address and proposals[0]["host"] == "127.0.0.2"
            assert proposals[0]["xaddrs"] == [f"http://127.0.0.2:{room_port}/onvif/device_service"]
            adopt = {"id": "room-1", "kind": "conference_endpoint", "host": "127.0.0.2", "ports": [room_port],
                     "period_s": 0.5}
            made = await http.post(f"/api/devices/{device_id}/children", json=adopt)
            assert made.status_code == 201, made.text
            assert (await http.post(f"/api/devices/{device_id}/children", json=adopt)).status_code == 409
            bad = await http.post(f"/api/devices/{device_id}/children", json={**adopt, "id": "Room_1"})
            assert bad.status_code == 422 and "Room_1" not in bad.text
            other = f"pi-sim-{uuid.uuid4().hex[:6]}"  # a Pi whose birth lists other roles
            assert (await http.post("/api/devices", json={"id": other, "kind": "pi"})).status_code == 201
            await Device.filter(id=other).update(roles=["sim"])
            refused = await http.post(f"/api/devices/{other}/children", json=adopt)
            assert refused.status_code == 409 and "does not run the role children" in refused.text
            found = await until_children(http, device_id, lambda f: f.get("room-1", {}).get("presence") == "online",
                                         "the adopted child online")
            assert found["room-1"]["adopted"] is True and found["room-1"]["kind"] == "conference_endpoint"
            assert await _json(http.get(f"/api/devices/{device_id}/children/proposals")) == []  # watched now

            # a camera dies: offline, and the rule fires on it
            await asyncio.to_thread(live.stop)
            await until_children(http, device_id, lambda f: f["cam-live"]["presence"] == "offline", "cam-live offline")
            offline = await async_wait_for(lambda: alert(http, rules["child_offline"], device_id), timeout=15,
                                           what="child_offline raised")
            assert offline["value"]["children"] == ["cam-live"]
            history = await _json(http.get(f"/api/devices/{device_id}/children/cam-live/history"))
            assert history[0]["what"] == "death" and history[0]["detail"] == "unreachable"

            # forget the adopted one: out of the desired state and of the fleet
            gone = await http.delete(f"/api/devices/{device_id}/children/room-1")
            assert gone.status_code == 204
            desired = await _json(http.get(f"/api/devices/{device_id}/desired"))
            assert desired["doc"]["children"]["children"] == []
            assert (await http.delete(f"/api/devices/{device_id}/children/room-1")).status_code == 404
        # the Pi stopped: its children are unknown, not offline; the alert is kept as it was
        found = await until_children(http, device_id, lambda f: f["cam-live"]["presence"] == "unknown",
                                     "children unknown with their parent gone")
        assert {c["presence"] for c in found.values()} == {"unknown"}
        kept = await alert(http, rules["child_offline"], device_id)
        assert kept is not None and kept["state"] == "open"
    finally:
        responder.stop()
        room.close()


async def _json(request: Any) -> Any:
    got = await request
    assert got.status_code == 200, got.text
    return got.json()


async def _nonempty(request: Any) -> Any:
    return await _json(request) or None
