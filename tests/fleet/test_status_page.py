"""The status page at `/`, rendered by a real headless Chromium; the screenshot is a test artifact."""

import asyncio
import re
from pathlib import Path

import httpx

from tests.support.browser import dump_dom, screenshot
from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


async def test_status_page_shows_who_is_online_in_chromium(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, artifacts_dir: Path, database_url: str) -> None:
    await fleet.post("/api/devices", json={"id": "cam-market-01", "kind": "pi", "ward": "tan-phu",
                                           "site": "Dong Xoai market", "name": "Market gate camera"})
    await fleet.post("/api/devices", json={"id": "light-qt-0007", "kind": "esp32", "ward": "tan-binh"})
    await fleet.post("/api/devices", json={"id": "speaker-tx-03", "kind": "esp32", "ward": "tan-xuan"})
    live = ScriptedDevice(mosquitto.port, "cam-market-01", ses=2)
    live.birth(roles=["sim"])
    live.health(cpu_pct=17.0, mem_pct=40.5, temp_c=51.2, queue=0)
    lamp = ScriptedDevice(mosquitto.port, "light-qt-0007", ses=9)
    lamp.birth(kind="esp32", roles=["light"], fw="0.1.0")
    lamp.health(heap_free=41232, rssi=-67)
    lamp.kill()  # it went away: offline by its will

    async def settled() -> bool:
        devices = (await fleet.get("/api/devices")).json()
        states = {d["id"]: d["online"] for d in devices}
        return states.get("cam-market-01") is True and states.get("light-qt-0007") is False \
            and (await fleet.get("/api/devices/light-qt-0007")).json()["last_health"] is not None

    await async_wait_for(settled, what="one online, one offline")
    base = str(fleet.base_url).rstrip("/")

    async def login_link() -> str:  # each Chromium run has a fresh profile: log it in once
        return base + (await fleet.post("/api/auth/login-link")).json()["url"]

    anonymous = await asyncio.to_thread(dump_dom, base + "/")
    assert 'action="/login"' in anonymous and "cam-market-01" not in anonymous  # no data without a login
    dom = await asyncio.to_thread(dump_dom, await login_link())
    rows = dict(re.findall(r'<tr class="state-([a-z-]+)" data-device="([a-z0-9-]+)"', dom))
    by_device = {device: state for state, device in rows.items()}
    assert by_device == {"cam-market-01": "online", "light-qt-0007": "offline", "speaker-tx-03": "never-seen"}
    assert re.search(r'id="count-online">1<', dom) and re.search(r'id="count-offline">1<', dom)
    assert "cpu 17% · mem 40% · 51°C · queue 0" in dom
    assert "https://" not in dom.split("<body")[0]  # nothing loaded from a CDN
    css = await fleet.get("/static/fleet.css")
    assert css.status_code == 200 and "badge" in css.text
    backend = database_url.split(":", 1)[0]
    shot = await asyncio.to_thread(screenshot, await login_link(), artifacts_dir / f"status-page-{backend}.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    live.close()
