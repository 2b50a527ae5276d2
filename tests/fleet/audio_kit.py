"""Test audio made by ffmpeg, loudness measured by ffmpeg's ebur128, and a fleet with an audio library."""

import re
import subprocess
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto

TARGET_LUFS = -23.0


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True)


def tone(path: Path, seconds: float, *, hz: int = 440, volume_db: float = -6.0, rate: int = 44_100,
         codec: list[str] | None = None, channels: int = 2) -> Path:
    """A sine tone (stereo by default) in the container the suffix names."""
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency={hz}:sample_rate={rate}:duration={seconds}",
           "-af", f"volume={volume_db}dB", "-ac", str(channels), *(codec or []), str(path))
    return path


def speechlike(path: Path, seconds: float, *, codec: list[str] | None = None) -> Path:
    """Pink noise with a syllable-rate (4 Hz) envelope and pauses: loudness gating and dynamics like speech."""
    ffmpeg("-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.3:duration={seconds}:sample_rate=44100",
           "-af", "volume='0.05+0.95*gt(sin(2*PI*4*t),0)*gt(sin(2*PI*0.5*t),-0.3)':eval=frame,"
                  "lowpass=f=4000,highpass=f=150",
           *(codec or []), str(path))
    return path


def loudness(path: Path) -> float:
    """Integrated loudness (LUFS) by ffmpeg's ebur128 filter, measured here independently of the fleet."""
    done = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-i", str(path), "-af", "ebur128",
                           "-f", "null", "-"], capture_output=True, text=True, check=True)
    found = re.findall(r"I:\s+(-?\d+(?:\.\d+)?) LUFS", done.stderr)
    return float(found[-1])


def wav_format(path: Path) -> tuple[int, int, int]:
    """(sample width in bytes, rate, channels) of a PCM WAV file."""
    with wave.open(str(path), "rb") as file:
        return file.getsampwidth(), file.getframerate(), file.getnchannels()


async def upload(http: httpx.AsyncClient, path: Path, title: str = "clip", *,
                 content_type: str = "application/octet-stream") -> httpx.Response:
    with path.open("rb") as file:
        return await http.post("/api/audio", files={"file": (path.name, file, content_type)},
                               data={"title": title}, timeout=60)


@asynccontextmanager
async def audio_fleet(tmp_path: Path, mosquitto: Mosquitto, database_url: str | None = None,
                      **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    url = database_url or f"sqlite://{tmp_path / 'fleet.sqlite3'}"
    async with running_fleet(fleet_settings(url, mosquitto.url, audio_dir=tmp_path / "audio",
                                            **settings)) as http:
        yield http
