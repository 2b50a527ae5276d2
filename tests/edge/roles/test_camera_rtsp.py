"""The camera role reading RTSP from an ffmpeg process on loopback; the camera goes away and
comes back, and the role reconnects by itself."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.roles.camera import CameraRole
from tests.edge.helpers import ConfigFactory, numbered, until
from tests.edge.roles.camera_fixtures import crossing, quiet_scene, street_fixture, write_clip  # noqa: F401
from tests.edge.roles.camera_scenes import Image
from tests.edge.roles.rtsp_server import RtspServer
from tests.support.mqtt_probe import Probe

Street = tuple[Image, list[Image]]


@pytest.fixture
def server(street: Street, tmp_path: Path) -> Iterator[RtspServer]:
    """The clip (a vehicle crossing every 4 s, looped) served on rtsp://127.0.0.1:<port>/cam."""
    scene = quiet_scene(street, 4.0, objects=[crossing(street, t0=0.5, t1=2.5)], noise_sigma=3.0)
    clip = write_clip((image for _, image in scene), tmp_path / "street.mp4", gop=12)
    rtsp = RtspServer(clip, tmp_path)
    rtsp.start()
    yield rtsp
    rtsp.stop()


async def test_rtsp_stream_gives_events_and_reconnects_after_the_camera_drops(
    edge_config: ConfigFactory, probe: Probe, server: RtspServer
) -> None:
    section = {"cameras": [{"id": "rtsp-1", "url": server.url, "category": "security", "end_after_s": 0.5,
                            "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "open_timeout_s": 5}]}
    async with Agent(edge_config(roles={"camera": section})) as agent:
        role = agent.roles["camera"]
        assert isinstance(role, CameraRole)
        source = role.cameras["rtsp-1"].source
        await until(lambda: [e for e in numbered(probe, "event") if e["phase"] == "start"], "an event over RTSP")
        assert source.read_errors == 0

        await asyncio.to_thread(server.stop)
        await until(lambda: source.read_errors >= 1, "the reader to notice the camera is gone")
        frames_before = source.frames_read
        await asyncio.to_thread(server.start)
        await until(lambda: source.reconnects >= 1 and source.frames_read > frames_before + 25,
                    "frames again after the camera came back", within=30)
        health = await until(
            lambda: [h for h in numbered(probe, "health")
                     if h.get("roles", {}).get("camera", {}).get("reconnects", 0) >= 1],
            "health reporting the reconnect",
        )
    figures = health[-1]["roles"]["camera"]
    assert figures["read_errors"] >= 1 and figures["frames"] > 0
    assert server.sessions >= 2
