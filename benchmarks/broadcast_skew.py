"""How close to its scheduled time does every speaker start a broadcast, and how soon after the
emergency button does every online speaker play? (issue 12, docs/broadcasts.md "Benchmark")

Real parts, all on this machine: the fleet (uvicorn, the ingest, the broadcasts worker, SQLite or
PostgreSQL) in this process, one Mosquitto with per-device accounts (dynamic security: each
speaker logs in with the password the fleet issued it, as in production), `--esp` ESP32 speaker
nodes (the firmware of this checkout on the MicroPython unix port, -X heapsize=80k, role
`speaker`, its audio written to the host board's sink file) and `--pi` Pi speaker agents
(`edge-agent` processes, role `speaker`, the player ffmpeg at the clip's pace into its null
output: no sound card). A clip is uploaded to the audio library (a 1 s tone, transcoded per kind)
and fetched by every speaker (`speaker.clip_fetch`) before the rounds.

Every clock is the host's: the boards run without clock.json (the host HAL's clock is the host
clock), the agents read the host's wall clock, the fleet stamps with it. So the device timestamps
(`ts`) of the playback events and the benchmark's own times are on one clock; the skew measured is
the nodes' scheduling and start-up lateness, with no clock error in it. The playback events are
heard on the broker itself (EventTap), so a slow ingest does not hide a start.

(a) Start skew: `--rounds` broadcasts to every speaker, `--gap-s` apart, the first `--lead-s`
    ahead, all scheduled at once through the path named in the output: `broadcast` (POST
    /api/broadcasts; the fleet's delivery puts the entries in each speaker's desired state; its
    time is printed on its own) or `desired` (the same entries put by the benchmark through PUT
    /api/devices/{id}/desired: not the broadcast path). Per speaker: the device ts of its
    playback `start` minus the scheduled time. Baseline, same run, same moment: a bare CPython
    process with one asyncio timer per speaker (loop.call_at) for the same instant, started 3 s
    before it: the lateness the machine's load alone gives a timer.
(b) Emergency latency: from the call (POST /api/broadcasts/emergency, else `speaker.broadcast`
    commands through POST /api/devices/{id}/commands, one per speaker, concurrently: not the
    emergency path) to each speaker's playback `start` (device ts). Baseline, same run: the same
    call for one speaker alone, just before each round.

    .venv/bin/python benchmarks/broadcast_skew.py [--esp 160] [--pi 40] [--rounds 3] [--lead-s 60] [--postgres]

Prints each round, then medians over the rounds. Takes a few minutes (most of it starting the nodes).
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.devices import NULL_PLAYER
from edge.config import write_config
from edge.launch import agent_argv, speaker_config
from fleet.broadcast.models import BroadcastReceipt, SpeakerDelivery
from fleet.models import Device, EventRecord
from provisioning.firmware_build import compile_slot
from provisioning.hostboard import prepare_board, start_board, stop_board
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto

WARD = "bench-ward"
TAG = "bench-speaker"
HEALTH_S = 30  # the nodes' health period: the fleet's default load, not the tests' fast one
TARGET_SKEW_P99_MS = 200
TARGET_EMERGENCY_P99_MS = 2000

BARE_TIMERS = r"""
import asyncio, json, sys, time
n, at_ms = int(sys.argv[1]), int(sys.argv[2])
async def main():
    loop = asyncio.get_running_loop()
    late, done = [], asyncio.Event()
    def fire():
        late.append(time.time() * 1000 - at_ms)
        if len(late) == n:
            done.set()
    when = loop.time() + (at_ms / 1000 - time.time())
    for _ in range(n):
        loop.call_at(when, fire)
    await done.wait()
    print(json.dumps(late))
asyncio.run(main())
"""


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def say(what: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, nearest rank (p99 of 200 values: the 198th)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "max": math.nan, "min": math.nan}
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99), "max": max(values), "min": min(values)}


def fmt(s: dict[str, float]) -> str:
    return f"p50 {s['p50']:7.0f}  p99 {s['p99']:7.0f}  max {s['max']:7.0f} ms  (min {s['min']:.0f}, n {s['n']:.0f})"


async def until(condition: Callable[[], Awaitable[Any]], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await condition()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.25)


class EventTap:
    """Every playback event the speakers publish, heard on the broker itself (paho, its own
    thread, the fleet's broker account): the figures do not depend on the fleet's ingest keeping
    up. `starts[event id][device] = device ts`."""

    def __init__(self, port: int, account: tuple[str, str]) -> None:
        self.starts: dict[str, dict[str, int]] = {}
        self.failed: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
                                  client_id=f"bench-tap-{os.getpid()}")
        self.client.username_pw_set(*account)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("ioc/v1/d/+/event", qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the event tap could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if body.get("type") != "playback" or not isinstance(body.get("ts"), int):
            return
        device = msg.topic.split("/")[3]
        with self._lock:
            if body.get("phase") == "start":
                self.starts.setdefault(str(body.get("id")), {}).setdefault(device, body["ts"])
            elif (body.get("data") or {}).get("status") == "failed":
                self.failed.setdefault(str(body.get("id")), {})[device] = str(body["data"].get("reason"))

    def of(self, event_id: str) -> dict[str, int]:
        with self._lock:
            return dict(self.starts.get(event_id, {}))

    def reasons(self, event_id: str) -> dict[str, int]:
        with self._lock:
            found: dict[str, int] = {}
            for reason in self.failed.get(event_id, {}).values():
                found[reason] = found.get(reason, 0) + 1
            return found

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Speaker:
    id: str
    kind: str  # esp32 | pi
    password: str = ""
    proc: subprocess.Popen[bytes] | None = None
    folder: Path | None = None


@dataclass
class Bench:
    http: httpx.AsyncClient
    broker: Mosquitto
    tmp: Path
    speakers: list[Speaker]
    clip: dict[str, Any] = field(default_factory=dict)  # the library's clip
    names: dict[str, str] = field(default_factory=dict)  # kind -> clip name on the node
    esp_heap: str = "80k"
    tap: EventTap | None = None

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.speakers]

    def kind_of(self, device_id: str) -> str:
        return next(s.kind for s in self.speakers if s.id == device_id)


# -- set-up ------------------------------------------------------------------------------------


def tone(path: Path, seconds: float) -> Path:
    """A 1 kHz tone with a 4 Hz envelope (speech band, not silent): what the library takes."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=1000:sample_rate=44100:duration={seconds}", "-af",
                    "volume='0.2+0.8*gt(sin(2*PI*4*t),0)':eval=frame", str(path)], check=True)
    return path


async def upload_clip(bench: Bench, seconds: float) -> None:
    path = tone(bench.tmp / "chime.wav", seconds)
    with path.open("rb") as file:
        made = await bench.http.post("/api/audio", files={"file": ("chime.wav", file, "audio/wav")},
                                     data={"title": "benchmark chime"}, timeout=120)
    made.raise_for_status()
    bench.clip = made.json()
    for variant in bench.clip["files"]:
        bench.names[variant["kind"]] = "c" + variant["sha256"][:24]


async def enroll(bench: Bench, parallel: int = 16) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(speaker: Speaker) -> None:
        async with gate:
            made = await bench.http.post("/api/devices", json={"id": speaker.id, "kind": speaker.kind, "ward": WARD,
                                                               "tags": [TAG]})
            made.raise_for_status()
            issued = await bench.http.post(f"/api/devices/{speaker.id}/credentials")
            issued.raise_for_status()
            speaker.password = str(issued.json()["mqtt"]["password"])

    await asyncio.gather(*(one(s) for s in bench.speakers))


def board_template(tmp: Path, port: int, wdt_poll_s: float) -> Path:
    """The firmware compiled once (mpy-cross); each board is a copy with its own config.json.

    The host HAL's watchdog is a shell loop beside each board (`sleep 0.5`, `date`, `stat`: about
    1.2 % of a core per board here, seven times the MicroPython process's own 0.17 %); on an ESP32
    it is a hardware timer that costs nothing. `wdt_poll_s` is that loop's period in the copies
    (the boards still reset within wdt_s + wdt_poll_s when their loop hangs); nothing else of the
    firmware is changed."""
    template = prepare_board(tmp / "board-template", "template", "127.0.0.1", port, precompiled=False)
    hal = template / "app_a" / "hal" / "host.py"
    source = hal.read_text()
    if "sleep 0.5;" not in source:
        raise RuntimeError("the host HAL's watchdog loop changed: look at board_template()")
    hal.write_text(source.replace("sleep 0.5;", f"sleep {wdt_poll_s:g};"))
    compile_slot(template / "app_a")
    return template


def start_esp(bench: Bench, speaker: Speaker, template: Path) -> None:
    folder = bench.tmp / "boards" / speaker.id
    shutil.copytree(template, folder)
    config = json.loads((template / "config.json").read_text())
    config.update(device_id=speaker.id, username=speaker.id, password=speaker.password, roles=["speaker"],
                  health_period_s=HEALTH_S, tz_min=420, boot_good_s=5)
    (folder / "config.json").write_text(json.dumps(config))
    speaker.folder = folder
    speaker.proc = start_board(folder, bench.esp_heap, new_session=True)


def start_pi(bench: Bench, speaker: Speaker) -> None:
    folder = bench.tmp / "pis" / speaker.id
    config = speaker_config(speaker.id, bench.broker.url, folder / "state", player=NULL_PLAYER,
                            options={"tz_min": 420}, health_period_s=HEALTH_S,
                            broker={"url": bench.broker.url, "username": speaker.id})
    path = write_config(config, folder / "agent.toml")
    speaker.folder = folder
    env = {**os.environ, "EDGE_BROKER__PASSWORD": speaker.password}
    with (folder / "agent.log").open("ab") as out:
        speaker.proc = subprocess.Popen(agent_argv(path, log_level="warning"), stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, env=env)


def stop_all(speakers: list[Speaker]) -> None:
    for s in speakers:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.send_signal(2)  # SIGINT: Ctrl-C, both kinds stop cleanly
    deadline = time.monotonic() + 15
    for s in speakers:
        if s.proc is None:
            continue
        try:
            s.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop_board(s.proc, timeout=2)


async def online(bench: Bench, timeout: float) -> None:
    want = len(bench.speakers)

    async def count() -> bool:
        rows = await Device.filter(id__in=bench.ids, online=True).values_list("roles", flat=True)
        return sum(1 for r in rows if r and "speaker" in r) >= want

    await until(count, f"{want} speakers online with the speaker role", timeout)


async def fetch_clips(bench: Bench, timeout: float, parallel: int = 8) -> None:
    """Every node downloads the clip (`speaker.clip_fetch`, the command the fleet's clip sender
    sends) from the fleet's tokenised URL; waits for every `ok`."""
    library = bench.http.app.state.audio_library  # type: ignore[attr-defined]
    files = {f["kind"]: f for f in bench.clip["files"]}
    gate = asyncio.Semaphore(parallel)
    base = str(bench.http.base_url).rstrip("/")

    async def one(speaker: Speaker) -> str:
        variant = files[speaker.kind]
        token, _ = library.token(speaker.id, variant["sha256"])
        args = {"name": bench.names[speaker.kind], "url": f"{base}/audio/files/{variant['sha256']}?t={token}",
                "sha256": variant["sha256"], "bytes": variant["bytes"]}
        status = "no answer"
        async with gate:
            for _ in range(3):  # a command the node lost (a reconnect) is sent again, as the fleet's sender does
                sent = await bench.http.post(f"/api/devices/{speaker.id}/commands",
                                             json={"name": "speaker.clip_fetch", "args": args, "ttl_s": 30})
                sent.raise_for_status()
                command_id = sent.json()["id"]

                async def answered(command_id: str = command_id) -> str | None:
                    got = (await bench.http.get(f"/api/devices/{speaker.id}/commands/{command_id}")).json()
                    return None if got["status"] == "sent" else str(got["status"])

                with contextlib.suppress(TimeoutError):
                    status = str(await until(answered, f"{speaker.id}'s clip_fetch", timeout))
                if status == "ok":
                    break
        return status

    results = await asyncio.gather(*(one(s) for s in bench.speakers))
    bad = [(s.id, r) for s, r in zip(bench.speakers, results, strict=True) if r != "ok"]
    if bad:
        raise RuntimeError(f"clip_fetch failed on {len(bad)} speaker(s): {bad[:5]}")


# -- measuring ---------------------------------------------------------------------------------


def starts(bench: Bench, event_id: str, ids: list[str]) -> dict[str, int]:
    """device id -> device ts of its playback `start` of `event_id`, heard on the broker."""
    assert bench.tap is not None
    wanted = set(ids)
    return {d: ts for d, ts in bench.tap.of(event_id).items() if d in wanted}


async def wait_starts(bench: Bench, event_id: str, ids: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        found = starts(bench, event_id, ids)
        if len(found) >= len(ids) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def stored(event_id: str, ids: list[str]) -> int:
    """How many of these starts the fleet's ingest has stored (the receipts' source)."""
    return await EventRecord.filter(type="playback", phase="start", event_id=event_id, device_id__in=ids).count()


def failures(bench: Bench, event_id: str) -> dict[str, int]:
    assert bench.tap is not None
    return bench.tap.reasons(event_id)


def ms_after(times: list[Any], t0: float) -> dict[str, float]:
    return spread([t.timestamp() * 1000 - t0 * 1000 for t in times if isinstance(t, datetime)])


async def delivery(entries: list[str], ids: list[str], t0: float) -> dict[str, Any]:
    """ms from the first API call to each speaker's document published (the delivery's sent_at)
    and to its `applied` report of the first entry (that receipt's delivered_at); the count of the
    entries' receipts in each state."""
    rows = await BroadcastReceipt.filter(entry_id__in=entries).values_list("entry_id", "state", "delivered_at")
    states: dict[str, int] = {}
    for _, state, _ in rows:
        states[str(state)] = states.get(str(state), 0) + 1
    sent = await SpeakerDelivery.filter(device_id__in=ids).values_list("sent_at", flat=True)
    return {"published": ms_after(list(sent), t0), "states": states,
            "applied": ms_after([d for e, _, d in rows if e == entries[0]], t0)}


async def bare_timers(n: int, at_ms: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-c", BARE_TIMERS, str(n), str(at_ms),
                                                stdout=asyncio.subprocess.PIPE)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


async def schedule_broadcasts(bench: Bench, times: list[int]) -> list[str]:
    """One one-off broadcast per time to every speaker (the tag), through the calendar's API;
    their entry ids."""
    entries = []
    for i, at_ms in enumerate(times, 1):
        made = await bench.http.post("/api/broadcasts", json={
            "title": f"benchmark round {i}", "clip_id": bench.clip["id"], "level": "normal",
            "targets": {"tags": [TAG]}, "start": iso(at_ms), "confirm": True}, timeout=60)
        if made.status_code != 201:
            raise RuntimeError(f"POST /api/broadcasts: {made.status_code} {made.text[:300]}")
        entries.append(f"b{made.json()['broadcast']['id']}.{at_ms // 1000}")
    return entries


async def schedule_desired(bench: Bench, times: list[int], parallel: int = 8) -> list[str]:
    """The same entries as a one-document `speaker` schedule put by the benchmark (not the
    broadcast path)."""
    entries = [f"bench{i}.{at_ms // 1000}" for i, at_ms in enumerate(times, 1)]
    gate = asyncio.Semaphore(parallel)

    async def one(speaker: Speaker) -> None:
        clip = bench.names[speaker.kind]
        schedule = [{"id": e, "clip": clip, "at": at} for e, at in zip(entries, times, strict=True)]
        async with gate:
            put = await bench.http.put(f"/api/devices/{speaker.id}/desired",
                                       json={"doc": {"speaker": {"volume": 70, "tz_min": 420, "schedule": schedule}}})
            put.raise_for_status()

    await asyncio.gather(*(one(s) for s in bench.speakers))
    return entries


async def skew_rounds(bench: Bench, path: str, rounds: int, lead_s: float, gap_s: float) -> dict[str, Any]:
    """(a): `rounds` occurrences `gap_s` apart, the first `lead_s` ahead, all scheduled at once
    (a city's schedule is known ahead; delivery is measured on its own)."""
    first = (int(time.time() + lead_s) + 1) * 1000  # whole seconds: a broadcast's start is stored to the second
    times = [first + int(i * gap_s * 1000) for i in range(rounds)]
    t0 = time.time()
    entries = await (schedule_broadcasts(bench, times) if path == "broadcast" else schedule_desired(bench, times))
    scheduled_in = time.time() - t0
    say(f"(a) {rounds} broadcasts scheduled in {scheduled_in:.1f} s; the first plays at {iso(first)}")
    timers, cpu = [], []
    for at_ms in times:
        # the bare timers start 3 s before the instant, so they run under the same load as the nodes
        await asyncio.sleep(max(0.0, (at_ms - 3000) / 1000 - time.time()))
        before = cpu_times()
        timers.append(await bare_timers(len(bench.speakers), at_ms))
        await asyncio.sleep(max(0.0, (at_ms + 3000) / 1000 - time.time()))
        after = cpu_times()
        cpu.append(100 * (after[0] - before[0]) / max(1, after[1] - before[1]))
    await asyncio.sleep(max(0.0, times[-1] / 1000 + 20 - time.time()))  # late starts within 20 s still count
    results = []
    for entry, at_ms, timer, busy in zip(entries, times, timers, cpu, strict=True):
        found = starts(bench, f"{entry}@{at_ms}", bench.ids)
        out, _ = await timer.communicate()
        skews = {d: ts - at_ms for d, ts in found.items()}
        results.append({"entry": entry, "cpu_pct": busy, "all": spread(list(skews.values())),
                        "esp32": spread([v for d, v in skews.items() if bench.kind_of(d) == "esp32"]),
                        "pi": spread([v for d, v in skews.items() if bench.kind_of(d) == "pi"]),
                        "bare": spread(json.loads(out)), "missing": len(bench.speakers) - len(found),
                        "failed": failures(bench, f"{entry}@{at_ms}"),
                        "stored": await stored(f"{entry}@{at_ms}", bench.ids)})
    return {"rounds": results, "scheduled_in_s": scheduled_in,
            "delivery": await delivery(entries, bench.ids, t0) if path == "broadcast" else None}


async def emergency_call(bench: Bench, targets: list[Speaker], tag: str) -> tuple[str, str, int]:
    """(path, the nodes' event id, call time in ms) of one emergency to `targets`."""
    t0 = time.time_ns() // 1_000_000
    made = await bench.http.post("/api/broadcasts/emergency", timeout=120, json={
        "title": f"benchmark emergency {tag}", "clip_id": bench.clip["id"],
        "targets": {"devices": [s.id for s in targets]} if len(targets) < len(bench.speakers) else {"tags": [TAG]},
        "confirm": True})
    if made.status_code in (404, 405):  # not built: the commands the emergency path sends, one per speaker
        eid = f"bench-em-{tag}"
        gate = asyncio.Semaphore(16)

        async def one(speaker: Speaker) -> None:
            async with gate:
                sent = await bench.http.post(f"/api/devices/{speaker.id}/commands", timeout=60, json={
                    "name": "speaker.broadcast", "ttl_s": 30,
                    "args": {"id": eid, "clip": bench.names[speaker.kind], "emergency": True}})
                sent.raise_for_status()

        t0 = time.time_ns() // 1_000_000
        await asyncio.gather(*(one(s) for s in targets))
        return "commands", eid, t0
    if made.status_code not in (200, 201, 202):
        raise RuntimeError(f"POST /api/broadcasts/emergency: {made.status_code} {made.text[:300]}")
    return "emergency", str(made.json()["entry_id"]), t0


async def emergency_round(bench: Bench, round_: int) -> dict[str, Any]:
    alone = bench.speakers[(round_ * 37) % len(bench.speakers)]
    _, eid, t0 = await emergency_call(bench, [alone], f"{round_}-alone")
    found = await wait_starts(bench, eid, [alone.id], timeout=30)
    alone_ms = found[alone.id] - t0 if found else math.nan
    await asyncio.sleep(3)  # its clip ends (1 s) and the amplifier's tail
    path, eid, t0 = await emergency_call(bench, bench.speakers, f"{round_}-all")
    called_s = time.time() - t0 / 1000
    found = await wait_starts(bench, eid, bench.ids, timeout=30)
    latency = {d: ts - t0 for d, ts in found.items()}
    return {"path": path, "called_s": called_s, "alone_ms": alone_ms, "alone_kind": alone.kind,
            "all": spread(list(latency.values())),
            "esp32": spread([v for d, v in latency.items() if bench.kind_of(d) == "esp32"]),
            "pi": spread([v for d, v in latency.items() if bench.kind_of(d) == "pi"]),
            "missing": len(bench.speakers) - len(found), "failed": failures(bench, eid),
            "stored": await stored(eid, bench.ids)}


# -- the run -----------------------------------------------------------------------------------


def delivery_built() -> bool:
    return (Path(__file__).resolve().parents[1] / "fleet" / "broadcast" / "delivery.py").exists()


@contextlib.asynccontextmanager
async def database(postgres: bool, tmp: Path) -> AsyncIterator[str]:
    if postgres:
        from tests.support.postgres import fresh_database

        async with fresh_database() as url:
            yield url
    else:
        yield f"sqlite://{tmp / 'fleet.sqlite3'}"


async def run(args: argparse.Namespace, tmp: Path) -> None:
    broker = Mosquitto(tmp / "mosquitto", secure=True, extra_conf="max_inflight_messages 1000\n")
    broker.start()
    speakers = ([Speaker(f"bspk-e{i:03d}", "esp32") for i in range(args.esp)]
                + [Speaker(f"bspk-p{i:03d}", "pi") for i in range(args.pi)])
    path = args.path if args.path != "auto" else ("broadcast" if delivery_built() else "desired")
    tap: EventTap | None = None
    try:
        async with database(args.postgres, tmp) as url:
            settings = fleet_settings(url, broker.admin_url, broker_accounts="dynsec", audio_dir=tmp / "audio")
            settings = settings.model_copy(update={"public_url": f"http://127.0.0.1:{settings.http_port}"})
            async with running_fleet(settings) as http:
                tap = EventTap(broker.port, broker.admin)
                bench = Bench(http, broker, tmp, speakers, esp_heap=args.esp_heap, tap=tap)
                started = time.monotonic()
                await upload_clip(bench, args.clip_s)
                await enroll(bench)
                say(f"clip {bench.clip['id']} uploaded, {len(speakers)} speakers enrolled")
                template = await asyncio.to_thread(board_template, tmp, broker.port, args.wdt_poll_s)
                # staggered, as a city's nodes never all boot in the same second
                for i, speaker in enumerate(speakers):
                    if speaker.kind == "esp32":
                        await asyncio.to_thread(start_esp, bench, speaker, template)
                    else:
                        start_pi(bench, speaker)
                    await asyncio.sleep(0.05 if speaker.kind == "esp32" else 0.4)
                    if i % 40 == 39:
                        say(f"{i + 1} nodes started")
                await online(bench, timeout=240)
                await asyncio.sleep(10)  # past the nodes' first turns (births, retained state, boot judged good)
                say(f"all {len(speakers)} speakers online after {time.monotonic() - started:.0f} s; fetching the clip")
                await fetch_clips(bench, timeout=40)
                await asyncio.sleep(5)  # the start-up's tail (health, births stored) settles
                before = cpu_times()
                await asyncio.sleep(5)
                after = cpu_times()
                idle_cpu = 100 * (after[0] - before[0]) / max(1, after[1] - before[1])
                memory = sum(rss_bytes(s.proc.pid) for s in speakers if s.proc and s.proc.poll() is None)
                print(f"{len(speakers)} speakers up and holding the clip after {time.monotonic() - started:.0f} s; "
                      f"nodes' RSS {memory / 2**20:.0f} MiB; machine busy {idle_cpu:.0f} % with nothing playing; "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
                measured = await skew_rounds(bench, path, args.rounds, args.lead_s, args.gap_s)
                skews = measured["rounds"]
                for r, result in enumerate(skews, 1):
                    print(f"(a) round {r} [{path}, {result['entry']}, cpu {result['cpu_pct']:.0f} %]: "
                          f"all {fmt(result['all'])}; missing {result['missing']} failed {result['failed']}; "
                          f"stored by the fleet {result['stored']}", flush=True)
                    print(f"      esp32 {fmt(result['esp32'])}\n      pi    {fmt(result['pi'])}\n"
                          f"      bare timers {fmt(result['bare'])}", flush=True)
                if measured["delivery"]:
                    d = measured["delivery"]
                    print(f"    delivery of the {args.rounds} broadcasts, ms after the first API call "
                          f"(scheduled in {measured['scheduled_in_s']:.1f} s): last published {fmt(d['published'])}\n"
                          f"      applied (round 1's receipts) {fmt(d['applied'])}; receipts {d['states']}", flush=True)
                emergencies = []
                for r in range(1, args.rounds + 1):
                    result = await emergency_round(bench, r)
                    emergencies.append(result)
                    print(f"(b) round {r} [{result['path']}, call answered in {result['called_s']:.1f} s]: "
                          f"all {fmt(result['all'])}; missing {result['missing']} "
                          f"failed {result['failed']}; stored by the fleet {result['stored']}; "
                          f"one speaker alone ({result['alone_kind']}) "
                          f"{result['alone_ms']:.0f} ms", flush=True)
                    print(f"      esp32 {fmt(result['esp32'])}\n      pi    {fmt(result['pi'])}", flush=True)
                    await asyncio.sleep(args.clip_s + 3)
                summary(args, path, skews, emergencies)
    finally:
        if tap is not None:
            tap.close()
        await asyncio.to_thread(stop_all, speakers)
        broker.kill()


def summary(args: argparse.Namespace, path: str, skews: list[dict[str, Any]],
            emergencies: list[dict[str, Any]]) -> None:
    def med(rows: list[dict[str, Any]], part: str, key: str) -> float:
        return float(statistics.median(r[part][key] for r in rows))

    n = args.esp + args.pi
    print(f"\n{n} speakers ({args.esp} ESP32 MicroPython host boards + {args.pi} Pi agents), one Mosquitto with "
          f"per-device accounts, {'PostgreSQL' if args.postgres else 'SQLite'}, every clock the host's; "
          f"{os.cpu_count()} cores; medians of {len(skews)} rounds")
    label = ("POST /api/broadcasts -> delivery -> desired state" if path == "broadcast"
             else "PUT /api/devices/{id}/desired by the benchmark (NOT the broadcast path)")
    print(f"(a) start skew, device ts of playback start - scheduled time [{label}]:")
    for part in ("all", "esp32", "pi"):
        print(f"      {part:5s}  p50 {med(skews, part, 'p50'):6.0f}  p99 {med(skews, part, 'p99'):6.0f}  "
              f"max {med(skews, part, 'max'):6.0f} ms")
    bare50, bare99 = med(skews, "bare", "p50"), med(skews, "bare", "p99")
    print(f"      bare asyncio timers, same instant: p50 {bare50:.0f}  p99 {bare99:.0f} ms; "
          f"ratio p99 speakers / bare timers {med(skews, 'all', 'p99') / max(bare99, 1):.1f}")
    met = med(skews, "all", "p99") <= TARGET_SKEW_P99_MS
    print(f"      target p99 <= {TARGET_SKEW_P99_MS} ms: {'met' if met else 'NOT met'}")
    epath = emergencies[0]["path"] if emergencies else "?"
    elabel = ("POST /api/broadcasts/emergency" if epath == "emergency"
              else "speaker.broadcast commands through POST /api/devices/{id}/commands (NOT the emergency path)")
    print(f"(b) emergency, call -> device ts of playback start [{elabel}]:")
    for part in ("all", "esp32", "pi"):
        print(f"      {part:5s}  p50 {med(emergencies, part, 'p50'):6.0f}  p99 {med(emergencies, part, 'p99'):6.0f}  "
              f"last {med(emergencies, part, 'max'):6.0f} ms")
    alone = statistics.median(r["alone_ms"] for r in emergencies)
    print(f"      one speaker alone: {alone:.0f} ms; "
          f"ratio p50 all / alone {med(emergencies, 'all', 'p50') / max(alone, 1):.1f}")
    print(f"      target p99 <= {TARGET_EMERGENCY_P99_MS} ms: "
          f"{'met' if med(emergencies, 'all', 'p99') <= TARGET_EMERGENCY_P99_MS else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--esp", type=int, default=160, help="ESP32 speaker nodes (MicroPython host boards)")
    parser.add_argument("--pi", type=int, default=40, help="Pi speaker agents (edge-agent processes)")
    parser.add_argument("--esp-heap", default="80k",
                        help="the boards' MicroPython heap (at 64k and 68k a clip_fetch with the fleet's "
                             "tokenised URL ran the speaker out of heap)")
    parser.add_argument("--wdt-poll-s", type=float, default=5.0,
                        help="period of the host HAL's watchdog shell loop in the boards (0.5 as shipped)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lead-s", type=float, default=60.0, help="how far ahead the first broadcast is scheduled")
    parser.add_argument("--gap-s", type=float, default=12.0, help="between the rounds' broadcasts")
    parser.add_argument("--clip-s", type=float, default=1.0)
    parser.add_argument("--path", choices=("auto", "broadcast", "desired"), default="auto",
                        help="(a) through POST /api/broadcasts (delivery) or PUT desired; auto: broadcast once "
                             "fleet/broadcast/delivery.py exists")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (consoles, agents' logs)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-broadcast-")
    try:
        asyncio.run(run(args, Path(tmp)))
    finally:
        if args.keep:
            print(f"work folder kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
