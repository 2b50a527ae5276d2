"""The three roles end to end: real MicroPython under a 64 KB heap (precompiled slot), real Mosquitto."""

import functools
import hashlib
import http.server
import json
import os
import pty
import struct
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisioning.hostboard import EXIT_CRASH
from tests.firmware.roles_import import sds011_frame
from tests.firmware.support import HostBoard, session_probe, wait_upstream
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe
from tests.support.wait import wait_for

Boards = Callable[..., HostBoard]
TZ = 420
PLACE = {"lat": 11.535, "lon": 106.883, "tz_min": TZ}
DAY = 20522 * 86_400_000  # 2026-03-10 00:00 UTC


def local_ms(h: int, m: int, s: int = 0) -> int:
    return DAY + ((h * 60 + m - TZ) * 60 + s) * 1000


def desired(probe: Probe, device_id: str, version: int, doc: dict) -> None:
    body = {"v": 1, "version": version, "doc": doc}
    probe.publish(f"ioc/v1/d/{device_id}/state/desired", json.dumps(body), retain=True)


def command(probe: Probe, device_id: str, cid: str, name: str, args: dict, device_now: int) -> None:
    body = {"v": 1, "id": cid, "name": name, "args": args, "exp": device_now + 60_000}
    probe.publish(f"ioc/v1/d/{device_id}/cmd", json.dumps(body))


def wait_io(board: HostBoard, name: str, value: str, timeout: float = 15) -> None:
    wait_for(lambda: board.io(name) == value, timeout=timeout, what=f"io/{name} == {value}")


# the light role's heap as test_role_heap.py holds it (docs/firmware.md, Memory: Margins): at 64k
# it ran out of heap in CI once the update code took its ~1 KB
LIGHT_HEAP = "68k"
# the speaker's, for the same reason: at 64k these two ran with no margin left (the old firmware
# passed), and the fleet's delivery code (issue 12: the `done` map pruned, a volume per entry, clip
# downloads queued and room made) took a few hundred bytes more: out of heap at the reconnect while
# playing, and in the download (docs/firmware.md, Memory: the speaker and the fleet's documents)
SPEAKER_HEAP = "68k"


def test_light_runs_its_program_offline_through_a_reboot_and_reports_failures(
    boards: Boards, device_id: str, mosquitto: Mosquitto
) -> None:
    watcher = session_probe(mosquitto.port, f"ioc/v1/d/{device_id}/#")
    board = boards(device_id, precompiled=True, roles=["light"], telemetry_period_s=2, **PLACE)
    board.set_io("current_ma", 300)
    board.set_clock(None)  # power-on without a clock: the fail-safe level
    try:
        board.start(heapsize=LIGHT_HEAP)
        wait_upstream(watcher, "birth")
        wait_io(board, "lamp", "1000")  # no program yet: the built-in fail-safe, full light
        steps = [{"at": "18:00", "level": 80}, {"at": "22:00", "level": 40},
                 {"sun": "rise", "level": 0}]
        desired(watcher, device_id, 1, {"light": {"failsafe": 70, "rules": [{"steps": steps}]}})
        assert wait_upstream(watcher, "state/reported")[0]["status"] == "applied"
        wait_io(board, "lamp", "700")  # the program's own fail-safe level, still no clock
        board.set_clock(local_ms(17, 59, 57))
        wait_io(board, "lamp", "0")  # sunrise's level holds until 18:00
        mosquitto.stop()
        wait_io(board, "lamp", "800")  # 18:00 came with the broker gone
        assert board.stop() == 0
        board.set_clock(local_ms(22, 30))  # the board was off for hours
        board.start(heapsize=LIGHT_HEAP)
        wait_io(board, "lamp", "400")  # from the program on flash, still without a broker
        board.set_io("current_ma", 0)  # the lamp burns out
        mosquitto.start()
        failure = wait_upstream(watcher, "event", lambda m: m["type"] == "lamp_failure", timeout=20)[0]
        assert failure["phase"] == "start" and failure["data"]["level"] == 40
        now = local_ms(22, 31)
        board.set_clock(now)  # the override's expiry is on the device's clock
        command(watcher, device_id, "o-1", "light.override", {"level": 100, "until": now + 4000}, now)
        assert wait_upstream(watcher, "cmd/result", lambda m: m["id"] == "o-1")[0]["status"] == "ok"
        wait_io(board, "lamp", "1000")
        wait_io(board, "lamp", "400")  # the override expired
        tele = wait_upstream(watcher, "telemetry", lambda m: m["role"] == "light")
        assert {"level", "ma", "burn_h", "energy_wh"} <= set(tele[-1]["r"])
        assert max(t["r"]["energy_wh"] for t in tele) > 0  # 300 mA at 230 V: 0.019 Wh a second
    finally:
        watcher.close()


def write_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    samples = b"\x00\x10" * int(rate * seconds)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(samples)) + samples
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_speaker_plays_its_schedule_offline_emergency_preempts_reports_arrive_later(
    boards: Boards, device_id: str, mosquitto: Mosquitto
) -> None:
    watcher = session_probe(mosquitto.port, f"ioc/v1/d/{device_id}/#")
    board = boards(device_id, precompiled=True, roles=["speaker"], tz_min=TZ)
    write_wav(board.path / "clips" / "news.wav", 3.0)
    write_wav(board.path / "clips" / "siren.wav", 0.5)
    board.set_clock(local_ms(5, 0))  # nothing is due yet, however long the set-up takes
    try:
        board.start(heapsize=SPEAKER_HEAP)
        wait_upstream(watcher, "birth")
        schedule = [{"id": "news", "clip": "news", "daily": "06:30"},
                    {"id": "alert", "clip": "siren", "at": local_ms(6, 30, 1), "emergency": True},
                    {"id": "gone", "clip": "missing", "at": local_ms(6, 30, 3)}]
        desired(watcher, device_id, 1, {"speaker": {"volume": 60, "schedule": schedule}})
        assert wait_upstream(watcher, "state/reported")[0]["status"] == "applied"
        mosquitto.stop()
        board.set_clock(local_ms(6, 29, 58))  # offline, the broadcasts come due
        board.wait_console(r"speaker: playing alert@", timeout=20)
        mosquitto.start()
        events = wait_upstream(watcher, "event", count=5, timeout=30)
        seen = [(e["data"]["broadcast"], e["phase"], e["data"]["status"], e["data"].get("reason"))
                for e in events]
        assert seen == [
            ("news", "start", "started", None),
            ("news", "end", "failed", "preempted"),
            ("alert", "start", "started", None),
            ("alert", "end", "completed", None),
            ("gone", "once", "failed", "no clip"),
        ]
        assert events[0]["id"] == events[1]["id"] and all(e["category"] == "other" for e in events)
        assert board.io("volume") == "60"
        assert os.path.getsize(board.path / "io" / "audio.out") >= 8000  # the siren, whole
    finally:
        watcher.close()


def test_sensor_reads_sds011_frames_through_garbage_and_raises_alarms(
    boards: Boards, device_id: str, probe: Probe
) -> None:
    master, slave = pty.openpty()
    tty.setraw(slave)
    board = boards(device_id, precompiled=True, roles=["sensor"], th_sensor=False,
                   sds011_port=os.ttyname(slave))
    try:
        board.start()
        wait_upstream(probe, "birth")
        desired(probe, device_id, 1, {"sensor": {"median": 3, "alarms": {"pm25": {"hi": 50, "hyst": 10}}}})
        wait_upstream(probe, "state/reported")
        os.write(master, b"\x00garbage\xaa" + sds011_frame(120, 200) + sds011_frame(121, 201)[:4])
        os.write(master, sds011_frame(122, 202) + b"\xaa\xc0\xff\xff" + sds011_frame(124, 204))
        first = wait_upstream(probe, "telemetry")[0]
        assert first["role"] == "sensor" and 12.0 <= first["r"]["pm25"] <= 12.4
        for pm in (800, 810, 820, 450, 300, 310, 320):
            os.write(master, sds011_frame(pm, pm))
        alarms = wait_upstream(probe, "event", lambda m: m["type"] == "alarm", count=2)
        assert [a["phase"] for a in alarms] == ["start", "end"] and alarms[0]["id"] == alarms[1]["id"]
        health = wait_upstream(probe, "health", lambda m: m["roles"]["sensor"]["frames"] >= 9)[0]
        assert health["roles"]["sensor"]["bad"] > 0
    finally:
        os.close(master)
        os.close(slave)


def test_safe_mode_after_crashing_boots(boards: Boards, device_id: str, probe: Probe) -> None:
    board = boards(device_id, precompiled=True, roles=["sensor"], sds011_port="/nonexistent/tty")
    for _ in range(3):
        board.start()
        assert board.wait_exit() == EXIT_CRASH
    board.start()
    birth = wait_upstream(probe, "birth")[0]
    assert birth["mode"] == "safe" and birth["roles"] == []
    assert wait_upstream(probe, "health")[0]["mode"] == "safe"
    board.wait_console("safe mode: 3 failed boots; roles off")


def test_watchdog_resets_a_hung_loop(boards: Boards, device_id: str, probe: Probe) -> None:
    board = boards(device_id, precompiled=True, wdt_s=2)
    board.start()
    wait_upstream(probe, "birth")
    (board.path / ".hang").write_text("1")
    assert board.wait_exit(timeout=15) == -9  # killed, as a reset: no clean stop
    board.wait_console("hal: watchdog reset")
    (board.path / ".hang").unlink()
    board.start()
    assert wait_upstream(probe, "birth", count=2)[1]["boot"]["reason"] == "watchdog"


@pytest.fixture
def clip_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder: (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="clip-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def test_speaker_downloads_clips_checked_and_within_its_budget(
    boards: Boards, device_id: str, probe: Probe, clip_server: tuple[str, Path]
) -> None:
    base, served = clip_server
    write_wav(served / "anthem.wav", 0.5)  # 8 KB
    write_wav(served / "long.wav", 0.75)  # 12 KB: with the anthem, over a 16 KB budget
    anthem = (served / "anthem.wav").read_bytes()
    board = boards(device_id, roles=["speaker"], clip_budget_kb=16)
    board.start(heapsize=SPEAKER_HEAP)
    wait_upstream(probe, "birth")
    now = int(time.time() * 1000)

    def fetch(cid: str, name: str, file: str, sha256: str, size: int) -> dict:
        args = {"name": name, "url": f"{base}/{file}", "sha256": sha256, "bytes": size}
        command(probe, device_id, cid, "speaker.clip_fetch", args, now)
        return wait_upstream(probe, "cmd/result", lambda m: m["id"] == cid)[0]

    bad = fetch("f-1", "anthem", "anthem.wav", "0" * 64, len(anthem))
    assert bad["status"] == "error" and "checksum" in bad["detail"]
    assert not (board.path / "clips" / "anthem.wav").exists()
    ok = fetch("f-2", "anthem", "anthem.wav", hashlib.sha256(anthem).hexdigest(), len(anthem))
    assert ok["status"] == "ok" and ok["detail"]["bytes"] == len(anthem)
    assert (board.path / "clips" / "anthem.wav").read_bytes() == anthem
    long = (served / "long.wav").read_bytes()
    over = fetch("f-3", "long", "long.wav", hashlib.sha256(long).hexdigest(), len(long))
    assert over["status"] == "error" and "over budget" in over["detail"]
    assert sorted(os.listdir(board.path / "clips")) == ["anthem.wav"]
    assert board.running
