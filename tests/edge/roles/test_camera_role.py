"""The camera role in the agent, against a private Mosquitto: events per the contract, snapshots
in the state folder, health figures, and events made while the broker is down delivered later."""

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import device_topic, parse_upstream
from edge.agent import Agent
from edge.roles.camera import CameraRole
from tests.edge.helpers import ConfigFactory, numbered, until
from tests.edge.roles.camera_fixtures import crossing, quiet_scene, street_fixture, write_clip  # noqa: F401
from tests.edge.roles.camera_scenes import Image
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe

Street = tuple[Image, list[Image]]


@pytest.fixture
def clip(street: Street, tmp_path: Path) -> Path:
    """7 s at 25 fps: two vehicles crossing the street one after the other."""
    objects = [crossing(street, t0=0.8, t1=2.8, y=150), crossing(street, t0=4.0, t1=5.5, y=220)]
    scene = quiet_scene(street, 7.0, objects=objects, noise_sigma=3.0)
    return write_clip((image for _, image in scene), tmp_path / "street.mp4")


def camera_section(clip: Path, **extra: Any) -> dict[str, Any]:
    return {"cameras": [{"id": "junction-1", "url": str(clip), "realtime": False, "category": "traffic_safety",
                         "end_after_s": 1.0, **extra}]}


def events(probe: Probe) -> list[dict[str, Any]]:
    return numbered(probe, "event")


def check_events(found: list[dict[str, Any]], device_id: str, state_dir: Path) -> None:
    by_id: dict[str, list[str]] = {}
    for body in found:
        parse_upstream(device_topic(device_id, "event"), json.dumps(body).encode())
        by_id.setdefault(body["id"], []).append(body["phase"])
        assert body["type"] == "motion" and body["category"] == "traffic_safety"
        if body["phase"] == "end":
            ref = body["snapshot"]
            file = state_dir / "snapshots" / Path(ref["ref"]).name
            assert hashlib.sha256(file.read_bytes()).hexdigest() == ref["sha256"]
    assert len(by_id) == 2, by_id
    for phases in by_id.values():
        assert phases[0] == "start" and phases[-1] == "end" and set(phases[1:-1]) <= {"update"}


async def test_motion_in_a_clip_arrives_as_events_with_snapshots(
    edge_config: ConfigFactory, probe: Probe, device_id: str, clip: Path, tmp_path: Path
) -> None:
    config = edge_config(roles={"camera": camera_section(clip)})
    async with Agent(config) as agent:
        role = agent.roles["camera"]
        assert isinstance(role, CameraRole)
        found = await until(lambda: [e for e in events(probe) if e["phase"] == "end"][1:] and events(probe),
                            "two ended motion events")
        health = await until(
            lambda: [h for h in numbered(probe, "health") if h.get("roles", {}).get("camera", {}).get("frames")],
            "health with the camera's figures",
        )
    check_events(found, device_id, tmp_path / "state")
    figures = health[-1]["roles"]["camera"]
    assert {"fps", "dropped_frames", "read_errors", "events", "snapshots"} <= figures.keys()
    assert figures["read_errors"] == 0


@pytest.fixture
def observer(mosquitto: Mosquitto, device_id: str) -> Iterator[Probe]:
    probe = Probe(mosquitto.port, f"ioc/v1/d/{device_id}/#", persistent=True)
    yield probe
    probe.close()


async def test_events_made_offline_are_delivered_after_the_broker_returns(
    edge_config: ConfigFactory, mosquitto: Mosquitto, observer: Probe, device_id: str, clip: Path, tmp_path: Path
) -> None:
    await asyncio.to_thread(mosquitto.stop)
    config = edge_config(roles={"camera": camera_section(clip)})
    async with Agent(config) as agent:
        role = agent.roles["camera"]
        assert isinstance(role, CameraRole)
        camera = role.cameras["junction-1"]
        await until(lambda: camera.source.finished and role.events_sent >= 4, "the clip's events, offline")
        assert not agent.link.connected.is_set()
        assert agent.outbox.depth >= role.events_sent, "the events wait in the store-and-forward queue"
        await asyncio.to_thread(mosquitto.start)
        found = await until(lambda: len(events(observer)) >= role.events_sent and events(observer),
                            "the queued events after the broker returned", within=30)
    check_events(found, device_id, tmp_path / "state")
