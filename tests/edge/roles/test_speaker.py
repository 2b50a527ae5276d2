"""The speaker role: a schedule from the desired state run on a clock the test moves, clips
fetched from a local HTTP server and checked, a real player process (ffmpeg at real-time pace to
the null muxer: it behaves like a player without needing a sound card), emergencies pre-empting,
reports through a private Mosquitto, and playing on while the broker is down."""

import asyncio
import functools
import hashlib
import http.server
import math
import struct
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import make_command, make_desired
from edge.agent import Agent
from edge.roles import ROLES, RoleContext, RoleSpec
from edge.roles.speaker import SpeakerRole, SpeakerSettings
from tests.edge.helpers import ConfigFactory, results_for, until
from tests.edge.roles.helpers import checked_upstream, events_of
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe

# A player that works headless: decodes at the clip's own pace (-re) and writes nowhere.
PLAYER = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", "{file}", "-f", "null", "-"]
T0 = 1_767_243_600_000  # 2026-01-01 12:00 in Vietnam
FAR = 4_102_444_800_000


def make_wav(path: Path, seconds: float, hz: float = 440.0) -> dict[str, Any]:
    rate = 8000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(6000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(int(rate * seconds))
            )
        )
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


class ManualClock:
    """Wall time the test sets; the scheduler's sleep ends when the time moves."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms
        self._moved: asyncio.Event | None = None

    def now_ms(self) -> int | None:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self._moved is None:
            self._moved = asyncio.Event()
        await self._moved.wait()

    def set(self, now_ms: int) -> None:
        self.now = now_ms
        if self._moved is not None:
            self._moved.set()
            self._moved = None


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def clip_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    """A local HTTP server with generated WAV clips: (base URL, {name: {sha256, bytes}})."""
    folder = tmp_path / "www"
    folder.mkdir()
    clips = {"chime": make_wav(folder / "chime.wav", 0.4), "news": make_wav(folder / "news.wav", 30, 330)}
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", clips
    server.shutdown()
    server.server_close()


def roles_with(clock: ManualClock) -> dict[str, RoleSpec[Any]]:
    def make(settings: SpeakerSettings, context: RoleContext) -> SpeakerRole:
        return SpeakerRole(settings, context, clock=clock)

    return {**ROLES, "speaker": RoleSpec(SpeakerSettings, make)}


def playback(probe: Probe, broadcast: str) -> list[tuple[str, str, str | None]]:
    return [
        (e["phase"], e["data"]["status"], e["data"].get("reason"))
        for e in events_of(probe, "playback")
        if e["data"]["broadcast"] == broadcast
    ]


def clip_list(base: str, clips: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": n, "url": f"{base}/{n}.wav", **c} for n, c in clips.items()]


@pytest.fixture
def observer(mosquitto: Mosquitto, device_id: str) -> Iterator[Probe]:
    probe = Probe(mosquitto.port, f"ioc/v1/d/{device_id}/#", persistent=True)
    yield probe
    probe.close()


async def test_schedule_plays_emergency_preempts_and_offline_playback_is_reported_later(
    edge_config: ConfigFactory,
    observer: Probe,
    mosquitto: Mosquitto,
    device_id: str,
    tmp_path: Path,
    clip_server: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    base, clips = clip_server
    clock = ManualClock(T0)
    settings = {"player": PLAYER}  # clips in the agent's state folder
    schedule = [
        {"id": "news-noon", "clip": "news", "at": T0 + 1000},
        {"id": "siren", "clip": "chime", "at": T0 + 5000, "priority": "emergency"},
        {"id": "chime-daily", "clip": "chime", "daily": "12:10"},  # local time, tz_min 420
    ]
    doc = {"speaker": {"tz_min": 420, "volume": 60, "clips": clip_list(base, clips), "schedule": schedule}}
    async with Agent(edge_config(roles={"speaker": settings}), roles=roles_with(clock)) as agent:
        role = agent.roles["speaker"]
        assert isinstance(role, SpeakerRole)
        observer.publish(*make_desired(device_id, 1, doc), retain=True)
        await until(lambda: role.cache.has("news") and role.cache.has("chime"), "the clips fetched")
        assert (tmp_path / "state" / "speaker" / "clips" / "news").is_file()

        clock.set(T0 + 1000)
        await until(lambda: playback(observer, "news-noon") == [("start", "started", None)], "news to start")
        clock.set(T0 + 5000)
        await until(lambda: playback(observer, "siren")[1:], "the emergency played", within=20)

        await asyncio.to_thread(mosquitto.stop)
        await until(lambda: not agent.link.connected.is_set(), "the outage noticed")
        clock.set(T0 + 10 * 60_000)  # 12:10 local: the daily chime, while offline
        await until(lambda: role.played == 2, "the daily chime played offline")
        assert agent.outbox.depth >= 2, "its reports wait in the queue"
        await asyncio.to_thread(mosquitto.start)
        await until(lambda: playback(observer, "chime-daily")[1:], "the offline reports delivered", within=20)
        health = await until(
            lambda: [
                h["roles"]["speaker"]
                for h in observer.payloads("health")
                if h.get("roles", {}).get("speaker", {}).get("played") == 2
            ],
            "health",
        )
    assert playback(observer, "news-noon") == [("start", "started", None), ("end", "failed", "preempted")]
    assert playback(observer, "siren") == [("start", "started", None), ("end", "completed", None)]
    assert playback(observer, "chime-daily") == [("start", "started", None), ("end", "completed", None)]
    daily = [e for e in events_of(observer, "playback") if e["data"]["broadcast"] == "chime-daily"]
    assert daily[0]["id"] == f"chime-daily@{T0 + 10 * 60_000}"
    assert health[-1]["preempted"] == 1 and health[-1]["player_failures"] == 0 and health[-1]["clips"] == 2
    checked_upstream(observer)


async def test_clip_cache_checks_budget_player_failure_and_missed_broadcasts(
    edge_config: ConfigFactory,
    probe: Probe,
    device_id: str,
    tmp_path: Path,
    clip_server: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    base, clips = clip_server
    clock = ManualClock(T0)
    chime = clips["chime"]["bytes"]
    # room for two chimes, not for the news; the default player (aplay) has no sound card here
    settings = {"state_dir": str(tmp_path / "speaker"), "budget_bytes": 2 * chime + 100}
    config = edge_config(roles={"speaker": settings})

    def command(cid: str, name: str, args: dict[str, Any]) -> None:
        probe.publish(*make_command(device_id, cid, f"speaker.{name}", args, FAR))

    async with Agent(config, roles=roles_with(clock)) as agent:
        role = agent.roles["speaker"]
        assert isinstance(role, SpeakerRole)
        await until(agent.link.connected.is_set, "the agent to connect")
        url = f"{base}/chime.wav"
        command("f1", "clip_fetch", {"name": "a", "url": url, **clips["chime"]})
        command("f2", "clip_fetch", {"name": "b", "url": url, **clips["chime"]})
        command("f3", "clip_fetch", {"name": "c", "url": url, **{**clips["chime"], "sha256": "0" * 64}})
        command("f4", "clip_fetch", {"name": "n", "url": f"{base}/news.wav", **clips["news"]})
        command("f5", "clip_fetch", {"name": "c", "url": url, **clips["chime"]})  # evicts the oldest
        await until(lambda: [r for i in range(1, 6) for r in results_for(probe, f"f{i}")][4:], "fetches")
        results = [r for i in range(1, 6) for r in results_for(probe, f"f{i}")]
        assert [r["status"] for r in results] == ["ok", "ok", "error", "error", "ok"]
        assert "checksum mismatch" in results[2]["detail"] and "larger than the cache budget" in results[3]["detail"]
        assert sorted(role.cache.entries) == ["b", "c"] and role.cache.evictions == 1
        assert role.cache.used_bytes <= settings["budget_bytes"]

        (tmp_path / "speaker" / "clips" / "b").write_bytes(b"RIFF rotten")  # the SD card rots
        command("p1", "broadcast", {"id": "p1", "clip": "b"})
        command("p2", "broadcast", {"id": "p2", "clip": "c"})  # aplay: no sound card
        await until(lambda: playback(probe, "p2")[1:], "the player's failure")

        probe.publish(
            *make_desired(device_id, 1, {"speaker": {"schedule": [{"id": "late", "clip": "c", "at": T0 - 600_000}]}}),
            retain=True,
        )
        await until(lambda: playback(probe, "late"), "the missed broadcast")
        health = await until(
            lambda: [
                h["roles"]["speaker"]
                for h in probe.payloads("health")
                if h.get("roles", {}).get("speaker", {}).get("player_failures")
            ],
            "health",
        )
    assert playback(probe, "p1") == [("once", "failed", "bad clip: checksum mismatch (deleted)")]
    (start, end) = playback(probe, "p2")
    assert start == ("start", "started", None) and end[:2] == ("end", "failed") and end[2].startswith("player exit 1")
    assert playback(probe, "late") == [("once", "failed", "missed")]
    assert health[-1]["checksum_failures"] >= 2 and health[-1]["clips"] == 1
    checked_upstream(probe)
