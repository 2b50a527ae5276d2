"""The `children` role against real processes on loopback: RTSP streams served by ffmpeg (one
live, one of a still picture: frozen, one that is killed: unreachable), a TCP listener that never
speaks RTSP (no frames), and a WS-Discovery responder; adoption through the desired state."""

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import make_desired
from edge.agent import Agent
from edge.roles.children import ChildrenRole
from tests.edge.helpers import ConfigFactory, numbered, until
from tests.edge.roles.camera_fixtures import crossing, quiet_scene, street_fixture, write_clip  # noqa: F401
from tests.edge.roles.camera_scenes import Image
from tests.edge.roles.rtsp_server import RtspServer
from tests.edge.roles.wsd_responder import WsdResponder
from tests.support.mqtt_probe import Probe

Street = tuple[Image, list[Image]]
QUICK = {"period_s": 0.5, "timeout_s": 1, "down_after": 2, "frame_within_s": 3, "frozen_after_s": 2}


@pytest.fixture
def live(street: Street, tmp_path: Path) -> Iterator[RtspServer]:
    """A street with a vehicle crossing every 4 s, looped."""
    scene = quiet_scene(street, 4.0, objects=[crossing(street, t0=0.5, t1=2.5)], noise_sigma=3.0)
    clip = write_clip((image for _, image in scene), tmp_path / "street.mp4", gop=12)
    (tmp_path / "live").mkdir()
    server = RtspServer(clip, tmp_path / "live")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def still(street: Street, tmp_path: Path) -> Iterator[RtspServer]:
    """The same picture over and over: a camera whose image froze."""
    clip = write_clip((street[0] for _ in range(50)), tmp_path / "still.mp4", gop=25)
    (tmp_path / "still").mkdir()
    server = RtspServer(clip, tmp_path / "still")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mute() -> Iterator[int]:
    """A TCP port that accepts and never answers: reachable, but no stream (a conference endpoint)."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener.getsockname()[1]
    listener.close()


def healths(probe: Probe, child_id: str) -> list[dict[str, Any]]:
    return numbered(probe, f"child/{child_id}/health")


def last_state(probe: Probe, child_id: str) -> str | None:
    found = healths(probe, child_id)
    return found[-1].get("state") if found else None


async def test_live_frozen_mute_and_dead_children(edge_config: ConfigFactory, probe: Probe, live: RtspServer,
                                                  still: RtspServer, mute: int) -> None:
    children = [
        {"id": "cam-live", "host": "127.0.0.1", "ports": [live.port], "rtsp_url": live.url, **QUICK},
        {"id": "cam-still", "host": "127.0.0.1", "ports": [still.port], "rtsp_url": still.url, **QUICK},
        {"id": "cam-mute", "host": "127.0.0.1", "ports": [mute], "rtsp_url": f"rtsp://127.0.0.1:{mute}/x", **QUICK},
        {"id": "room-1", "kind": "conference_endpoint", "host": "127.0.0.1", "ports": [mute], "icmp": True,
         "fw": "9.1", **QUICK},
    ]
    async with Agent(edge_config(roles={"children": {"children": children}})) as agent:
        role = agent.roles["children"]
        assert isinstance(role, ChildrenRole)
        await until(lambda: last_state(probe, "cam-live") == "ok" and last_state(probe, "cam-still") == "frozen"
                    and last_state(probe, "cam-mute") == "no_frames" and healths(probe, "room-1"),
                    "each child judged", within=30)
        births = {cid: numbered(probe, f"child/{cid}/birth") for cid in ("cam-live", "cam-still", "cam-mute", "room-1")}
        assert all(len(b) == 1 for b in births.values())
        assert births["room-1"][0]["kind"] == "conference_endpoint" and births["room-1"][0]["fw"] == "9.1"
        assert births["cam-live"][0]["kind"] == "ip_camera"
        cam = healths(probe, "cam-live")[-1]
        assert cam["stream"] == "live" and (cam["width"], cam["height"]) == (640, 360) and cam["fps"] > 0
        assert cam["open_ports"] == [live.port] and cam["icmp"] == "off"
        frozen = healths(probe, "cam-still")[-1]
        assert frozen["stream"] == "frozen" and frozen["same_s"] >= 2 and frozen["width"] == 640
        room = healths(probe, "room-1")[-1]
        assert room["state"] == "ok" and room["icmp"] in ("unavailable", "ok") and "stream" not in room

        await asyncio.to_thread(live.stop)  # the camera dies: its port closes
        deaths = await until(lambda: numbered(probe, "child/cam-live/death"), "the dead camera's death", within=20)
        assert deaths[0]["reason"] == "unreachable"
        figures = role.health()
        assert figures["children"] == 4 and figures["absent"] == 1 and figures["frozen"] == 1
        health = await until(lambda: [h for h in numbered(probe, "health")
                                      if h.get("roles", {}).get("children", {}).get("absent") == 1],
                             "the role's figures in the Pi's health")
        assert health[-1]["roles"]["children"]["no_frames"] == 1
    # numbered in the Pi's own stream with everything else: no number used twice
    with probe._lock:
        stamped = [json.loads(payload) for _, payload, _ in probe.messages if payload]
    numbers = [(p["ses"], p["seq"]) for p in stamped if "seq" in p]
    assert len(numbers) == len(set(numbers))

async def test_discovery_proposes_and_the_desired_state_adopts(edge_config: ConfigFactory, probe: Probe,
                                                               mute: int, device_id: str) -> None:
    responder = WsdResponder(address="urn:uuid:7a1c0000-0000-4000-8000-00000000cafe", device_host="127.0.0.1",
                             device_port=mute, garbage_first=True)
    responder.start()
    section = {"discovery": {"target": responder.target, "every_s": 1, "wait_s": 0.5}}
    try:
        async with Agent(edge_config(roles={"children": section})) as agent:
            role = agent.roles["children"]
            assert isinstance(role, ChildrenRole)
            events = await until(lambda: [e for e in numbered(probe, "event") if e["type"] == "child_proposed"],
                                 "a proposal")
            proposal = events[0]
            assert proposal["phase"] == "once" and proposal["category"] == "other"
            assert proposal["data"]["address"] == responder.address and proposal["data"]["host"] == "127.0.0.1"
            assert proposal["data"]["kind"] == "ip_camera"
            assert proposal["data"]["xaddrs"] == [f"http://127.0.0.1:{mute}/onvif/device_service"]
            assert responder.probes[0] == "dn:NetworkVideoTransmitter"
            await until(lambda: len(responder.probes) >= 3, "probes again")
            assert len([e for e in numbered(probe, "event") if e["type"] == "child_proposed"]) == 1  # once
            assert role.health()["probe_errors"] >= 1  # the garbage answer, ignored

            adopted = {"id": "cam-adopted", "host": "127.0.0.1", "ports": [mute], "period_s": 0.5}
            probe.publish(*make_desired(device_id, 1, {"children": {"children": [adopted]}}), retain=True)
            await until(lambda: numbered(probe, "child/cam-adopted/birth"), "the adopted child's birth")
            await until(lambda: [r for r in probe.payloads("state/reported") if r["version"] == 1
                                 and r["status"] == "applied"], "desired state applied")

            bad = {"id": "Cam_Bad", "host": "127.0.0.1"}
            probe.publish(*make_desired(device_id, 2, {"children": {"children": [bad]}}), retain=True)
            rejected = await until(lambda: [r for r in probe.payloads("state/reported") if r["version"] == 2],
                                   "the bad child refused")
            assert rejected[0]["status"] == "rejected" and rejected[0]["error"].startswith("children.0.id: ")
            assert "cam-adopted" in role.watches  # still watched: the last applied version runs
        probe.publish(f"ioc/v1/d/{device_id}/state/desired", b"", retain=True)
    finally:
        responder.stop()
