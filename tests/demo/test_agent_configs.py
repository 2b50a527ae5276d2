"""edge/launch.py's config builders, which the demo writes its Pi agents' configs with: each
role's table is checked by the role when the config is built, and the file `write_config` makes
is read back by the agent's own loader as the same config (a camera's tables in a list included)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from edge.config import AgentConfig, load_config, write_config
from edge.errors import ConfigError
from edge.launch import agent_config, camera_config, hotspot_config, sensor_config, sim_config, speaker_config

BROKER = "mqtt://127.0.0.1:1884"


def configs(state: Path) -> list[AgentConfig]:
    return [
        sim_config("pi-sim", BROKER, state, sim_period_s=2.0),
        sensor_config("pi-air", BROKER, state, port="/dev/pts/9", health_period_s=5, options={
            "max_error": {"pm25": 1.0}, "alarms": {"pm25": {"high": 50.0, "hysteresis": 5.0}}}),
        camera_config("pi-cam", BROKER, state, cameras=[
            {"id": "junction-1", "url": "/srv/clips/bikes.mp4", "loop": True, "category": "traffic_safety",
             "zones": [{"name": "crossing", "category": "security",
                        "polygon": [[0.5, 0.4], [1.0, 0.4], [1.0, 1.0]]}], "gate": {"threshold": 20}},
            {"id": "market", "url": "rtsp://10.0.0.21:554/stream1", "ignore": [[[0, 0], [0.3, 0], [0.3, 0.08]]]},
        ], options={"snapshot_max_mb": 20.0}),
        hotspot_config("pi-wifi", BROKER, state, log_path=Path("/run/ioc-hotspot/events"), options={"tz_min": 420}),
        hotspot_config("pi-wifi-2", BROKER, state, ctrl_path="/var/run/hostapd/wlan0"),
        speaker_config("pi-speaker", BROKER, state, player=["ffmpeg", "-re", "-i", "{file}", "-f", "null", "-"],
                       broker={"url": BROKER, "username": "pi-speaker"}),
    ]


def test_each_builder_writes_a_file_the_agent_reads_back_as_the_same_config(tmp_path: Path) -> None:
    for config in configs(tmp_path / "state"):
        path = write_config(config, tmp_path / f"{config.device_id}.toml")
        assert load_config(path) == config, path.read_text()
    camera = (tmp_path / "pi-cam.toml").read_text()
    assert 'cameras = [{id = "junction-1", url = "/srv/clips/bikes.mp4", loop = true' in camera


@pytest.mark.parametrize(("build", "message"), [
    (lambda s: agent_config("pi-x", BROKER, s, {"lamp": {}}), "roles.lamp: no such role (known: sim, camera"),
    (lambda s: sensor_config("pi-x", BROKER, s, port="/dev/pts/9", options={"median": 99}),
     "roles.sensor.median: Input should be less than or equal to 15"),
    (lambda s: camera_config("pi-x", BROKER, s, cameras=[]), "roles.camera.cameras: List should have at least 1"),
    (lambda s: hotspot_config("pi-x", BROKER, s), "roles.hotspot: give log_path or ctrl_path (one of them)"),
    (lambda s: speaker_config("pi-x", BROKER, s, options={"volume": 50}), "roles.speaker.volume: Extra inputs"),
    (lambda s: sim_config("PI X", BROKER, s), "device_id: must match"),
], ids=["unknown role", "sensor option", "no camera", "hotspot source", "speaker key", "device id"])
def test_a_mistake_is_a_config_error_when_the_config_is_built(
        tmp_path: Path, build: Callable[[Path], AgentConfig], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(tmp_path)
    assert str(caught.value).startswith(message), caught.value
