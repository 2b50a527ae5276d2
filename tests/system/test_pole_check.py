"""Checks at the pole (issue 17, must-have 5; docs/assets.md "Checks at the pole", docs/provisioning.md
"provision check") on real processes: the fleet (uvicorn), a private Mosquitto, ESP32 boards running the
firmware on the MicroPython unix port, and `provision check` as the technician runs it (a subprocess
with a technician's API token).

The lamp is the one thing that cannot run here: the test plays it at the pins (the host HAL's io files),
the lowest boundary there is. A healthy lamp draws 300 mA whenever the firmware drives io/lamp above
0; a broken one draws nothing. Everything else (the lamp-on command, its answer, the settled reading,
the verdicts, the exit status) is the real code's.
"""

import asyncio
import contextlib
import os
import struct
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from fleet.assets.check_run import TESTS_PER_MINUTE
from fleet.assets.models import Asset, AssetKind
from fleet.auth.roles import Role
from tests.firmware.support import HostBoard
from tests.fleet.ops_map_kit import browser
from tests.support.fleet import fleet_settings, running_fleet, token_for
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

HEAP = "68k"  # the light's and the speaker's heap in the firmware tests (tests/firmware/test_roles_device.py)
BOARD = {"health_period_s": 5, "telemetry_period_s": 600, "keepalive_s": 2}
HEALTHY_MA = 300


@contextlib.asynccontextmanager
async def lamp(board: HostBoard, draws_ma: int) -> AsyncIterator[None]:
    """The lamp on the board's pins: draws `draws_ma` while the firmware drives it, 0 otherwise."""
    async def follow() -> None:
        drawn = None
        while True:
            duty = board.io("lamp")
            want = draws_ma if duty and int(duty) > 0 else 0
            if want != drawn:
                board.set_io("current_ma", want)
                drawn = want
            await asyncio.sleep(0.05)

    board.set_io("current_ma", 0)
    task = asyncio.create_task(follow(), name=f"lamp-{board.device_id}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def write_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    samples = b"\x00\x10" * int(rate * seconds)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(samples)) + samples
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


async def provision_check(http: httpx.AsyncClient, token: str, *args: str) -> tuple[int, list[str], str]:
    """`provision check` as a technician runs it: exit status, stdout lines, stderr."""
    env = {**os.environ, "PROVISION_API_TOKEN": token, "PROVISION_FLEET_URL": str(http.base_url)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "provisioning.cli", "check", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    print(f"$ provision check {' '.join(args)}\n{out.decode()}{err.decode()}(exit {proc.returncode})")
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines(), err.decode()


def item(lines: list[str], name: str) -> str:
    found = [line for line in lines if line.split(" ", 1)[1].startswith(name + ":")]
    assert len(found) == 1, (name, lines)
    return found[0]


async def device(http: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    got = await http.get(f"/api/devices/{device_id}")
    return dict(got.json()) if got.status_code == 200 else {}


async def online(http: httpx.AsyncClient, device_id: str) -> None:
    async def ready() -> bool:
        d = await device(http, device_id)
        return bool(d.get("state") == "online" and d.get("last_health") and d.get("roles"))

    await async_wait_for(ready, timeout=40, interval=0.2, what=f"{device_id} online with its health")


async def test_provision_check_passes_a_healthy_pole_and_fails_a_broken_lamp_and_an_offline_board(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    good, bad, spk = (f"esp-chk-{name}-{uuid.uuid4().hex[:4]}" for name in ("good", "bad", "spk"))
    boards = {
        good: HostBoard(tmp_path / good, good, mosquitto.port, roles=["light"], **BOARD),
        bad: HostBoard(tmp_path / bad, bad, mosquitto.port, roles=["light"], **BOARD),
        spk: HostBoard(tmp_path / spk, spk, mosquitto.port, roles=["speaker"], **BOARD),
    }
    write_wav(boards[spk].path / "clips" / "test_tone.wav", 0.5)
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url)
    async with running_fleet(settings) as http, lamp(boards[good], HEALTHY_MA), lamp(boards[bad], 0):
        try:
            for board in boards.values():
                board.start(HEAP)
            for device_id in boards:
                await online(http, device_id)
            # the healthy board's pole: a 100 W lamp (up to 100/230 A x 1.5 = 652 mA is plausible)
            await Asset.create(id=f"pole-{good}", kind=AssetKind.POLE, attributes={"lamp_w": 100}, device_id=good)
            technician = await token_for(http, Role.TECHNICIAN)
            reader = await token_for(http, Role.READ_ONLY)

            # -- the healthy pole, its lamp on by its program: every item passes, the lamp test too (an
            #    override that keeps the level still brings a settled reading) ------------------------
            put = await http.put(f"/api/devices/{good}/desired", json={"doc": {"light": {"default": 100}}})
            assert put.status_code == 200, put.text

            async def burning() -> bool:
                got = (await http.get(f"/api/devices/{good}/check")).json()
                return any(i["item"] == "lamp" and i["status"] == "pass" and "on at level 100" in i["detail"]
                           for i in got["items"])

            await async_wait_for(burning, timeout=30, interval=0.2, what="the program's lamp on")
            code, lines, _ = await provision_check(http, technician, "--device", good, "--lamp-test",
                                                   "--lamp-seconds", "20")
            assert code == 0, lines
            assert [line.split(" ", 1)[0] for line in lines] == ["PASS"] * 6, lines
            assert item(lines, "lamp_test") == f"PASS lamp_test: on at level 100, {HEALTHY_MA} mA"
            assert item(lines, "rssi") == "PASS rssi: -60 dBm (>= -75)"
            assert item(lines, "online") == "PASS online: online"
            # the command reached the board and it answered; the lamp is on
            assert boards[good].io("lamp") == "1000"
            audit = (await http.get("/api/audit", params={"action": "device.install_test", "target": good})).json()
            assert len(audit) == 1 and audit[0]["detail"]["name"] == "light.override", audit
            assert audit[0]["actor"].startswith("technician-")
            command = (await http.get(f"/api/devices/{good}/commands/{audit[0]['detail']['command']}")).json()
            assert command["status"] == "ok" and command["args"]["level"] == 100, command

            # -- the broken lamp: on, and no current --------------------------------------------------
            code, lines, err = await provision_check(http, technician, "--device", bad, "--lamp-test")
            assert code == 15, (lines, err)
            assert item(lines, "lamp_test").startswith("FAIL lamp_test: on at level 100 but drawing 0 mA"), lines
            assert item(lines, "online") == "PASS online: online"
            assert "2 of 6 items failed: lamp, lamp_test" in err

            # -- the speaker: the test tone plays to its end -----------------------------------------
            code, lines, _ = await provision_check(http, technician, "--device", spk, "--tone-test")
            assert code == 0, lines
            assert item(lines, "tone_test") == "PASS tone_test: the test tone played to its end"
            assert (boards[spk].path / "io" / "audio.out").stat().st_size > 0

            # -- the same on a phone: the page, in Vietnamese and English, and its test button ---------
            async with browser(http, Role.TECHNICIAN) as phone, browser(http, Role.READ_ONLY) as looker:
                vi = await phone.get(f"/devices/{spk}/check?lang=vi")
                assert vi.status_code == 200, vi.text
                assert "Kiểm tra tại cột" in vi.text and "Âm thử" in vi.text and "ĐẠT" in vi.text
                assert 'id="tone-button"' in vi.text and 'id="lamp-button"' not in vi.text
                device_page = await phone.get(f"/devices/{spk}?lang=en")
                assert f'href="/devices/{spk}/check"' in device_page.text
                en = await phone.get(f"/devices/{spk}/check?lang=en")
                assert "Play the test tone" in en.text and "the test tone played to its end" in en.text
                pressed = await phone.post(f"/devices/{spk}/check/test", data={"action": "test_tone"})
                assert pressed.status_code == 200 and "Đã gửi lệnh phát âm thử" in pressed.text, pressed.text
                looked = await looker.get(f"/devices/{spk}/check")
                assert looked.status_code == 200 and 'id="tone-button"' not in looked.text
                refused_page = await looker.post(f"/devices/{spk}/check/test", data={"action": "test_tone"})
                assert refused_page.status_code == 403, refused_page.text
                async with httpx.AsyncClient(base_url=str(http.base_url), cookies=phone.cookies,
                                             headers={"Origin": "http://evil.example"}) as other_site:
                    forged = await other_site.post(f"/devices/{spk}/check/test", data={"action": "test_tone"})
                    assert forged.status_code == 403, forged.text
            audit = (await http.get("/api/audit", params={"action": "device.install_test", "target": spk})).json()
            assert [a["detail"]["name"] for a in audit] == ["speaker.broadcast"] * 2, audit

            # -- who may: read_only reads the check but sends no test; a bounded number of tests ------
            as_reader = {"Authorization": f"Bearer {reader}"}
            as_technician = {"Authorization": f"Bearer {technician}"}
            assert (await http.get(f"/api/devices/{good}/check", headers=as_reader)).status_code == 200
            refused = await http.post(f"/api/devices/{good}/install-test", headers=as_reader,
                                      json={"action": "lamp_on", "seconds": 10})
            assert refused.status_code == 403, refused.text
            too_long = await http.post(f"/api/devices/{good}/install-test", headers=as_technician,
                                       json={"action": "lamp_on", "seconds": 61})
            assert too_long.status_code == 422, too_long.text
            no_speaker = await http.post(f"/api/devices/{good}/install-test", headers=as_technician,
                                         json={"action": "test_tone"})
            assert no_speaker.status_code == 409, no_speaker.text
            for _ in range(TESTS_PER_MINUTE - 1):  # the CLI's lamp test was the first this minute
                sent = await http.post(f"/api/devices/{good}/install-test", headers=as_technician,
                                       json={"action": "lamp_on", "seconds": 5})
                assert sent.status_code == 202, sent.text
            over = await http.post(f"/api/devices/{good}/install-test", headers=as_technician,
                                   json={"action": "lamp_on", "seconds": 5})
            assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1, over.text
            audit = (await http.get("/api/audit", params={"action": "device.install_test", "target": good})).json()
            assert len(audit) == TESTS_PER_MINUTE, audit

            # -- a board that died: offline ----------------------------------------------------------
            boards[bad].kill()

            async def gone() -> bool:
                return (await device(http, bad)).get("state") == "offline"

            await async_wait_for(gone, timeout=30, interval=0.2, what=f"{bad} offline")
            code, lines, err = await provision_check(http, technician, "--device", bad)
            assert code == 15, (lines, err)
            assert item(lines, "online") == "FAIL online: offline (lost)", lines
        finally:
            for board in boards.values():
                board.kill()
            for device_id, board in boards.items():
                print(f"{device_id} console, last lines:\n" + "\n".join(board.console().splitlines()[-12:]))
