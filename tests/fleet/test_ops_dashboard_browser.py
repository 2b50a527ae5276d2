"""The ops overview and a device page with its history charts in a real headless Chromium under the
fleet's Content-Security-Policy; full-page screenshots (1280 wide) are test artifacts:
test-artifacts/ops-overview.png, ops-device-page.png (24 h), ops-device-page-7d.png."""

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fleet.models import Device
from fleet.ops.models import AlertState, Severity
from tests.fleet.cdp import Page, browser_page
from tests.fleet.ops_dashboard_kit import alert, env_node_history, page_client
from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

CHARTS_READY = "document.readyState === 'complete' && document.querySelector('svg.chart') !== null"
WARDS = ("tan-phu", "tan-binh", "tan-xuan", "tan-thien", "tan-dong", "phu-thinh", "tien-thanh", "tan-thanh")


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    """The alert engine's one turn at the start, none during the test (its alerts are rows made here)."""
    async with running_fleet(fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url,
                                          ops_tick_s=300)) as http:
        yield http


async def shot(page: Page, path: Path) -> Path:
    await page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    height = int(await page.evaluate("document.documentElement.scrollHeight"))
    await page.call("Emulation.setDeviceMetricsOverride", width=1280, height=min(max(height, 600), 3200),
                    deviceScaleFactor=1, mobile=False)
    data = base64.b64decode((await page.call("Page.captureScreenshot", format="png"))["data"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    await asyncio.to_thread(path.write_bytes, data)
    return path


async def test_the_overview_and_a_device_page_in_chromium(fleet: httpx.AsyncClient, mosquitto: Mosquitto,
                                                          artifacts_dir: Path) -> None:
    now = datetime.now(UTC)
    await Device.bulk_create([Device(id=f"light-{WARDS[i % 8][:6]}-{i:03d}", kind="esp32", ward=WARDS[i % 8],
                                     roles=["light"], fw=("0.9.1", "0.9.2", "1.0.0")[i % 3]) for i in range(40)])
    await fleet.post("/api/devices", json={"id": "env-tp-01", "kind": "pi", "ward": "tan-phu",
                                           "name": "Market air quality", "site": "Dong Xoai market"})
    await env_node_history("env-tp-01", (now - timedelta(hours=20)).replace(second=0, microsecond=0),
                           minutes=20 * 60, gap=range(300, 420))
    cam = ScriptedDevice(mosquitto.port, "cam-qt-01", ses=2)
    cam.birth(roles=["camera"], fw="2.1.0")
    cam.health(cpu_pct=23.0, temp_c=58.5, queue=2)
    lamp = ScriptedDevice(mosquitto.port, "light-qt-0007", ses=9)
    lamp.birth(kind="esp32", roles=["light"], fw="0.9.2")
    lamp.health(heap_free=41232, rssi=-67)
    lamp.kill()

    async def settled() -> bool:
        lamp_state = (await fleet.get("/api/devices/light-qt-0007")).json().get("state")
        cam_state = (await fleet.get("/api/devices/cam-qt-01")).json().get("state")
        return bool(lamp_state == "offline" and cam_state == "online")

    await async_wait_for(settled, what="the camera online, the lamp offline")
    await alert("light-qt-0007", "", Severity.CRITICAL, AlertState.OPEN, now - timedelta(minutes=4),
                "light-qt-0007 offline for 3 min")
    await alert("cam-qt-01", "", Severity.MINOR, AlertState.ACKNOWLEDGED, now - timedelta(hours=1),
                "camera fps under 5 (3.2)", kind="camera_fps_low")
    await alert("env-tp-01", "tan-phu", Severity.WARNING, AlertState.OPEN, now - timedelta(minutes=30),
                "cabinet temperature 51 °C over 50 °C", kind="temp_high")
    await alert("env-tp-01", "tan-phu", Severity.MAJOR, AlertState.RESOLVED, now - timedelta(hours=14),
                "env-tp-01 offline for 5 min")

    async with page_client(fleet) as http:
        answer = await http.get("/devices/env-tp-01")
        assert answer.status_code == 200, answer.text[-3000:]
    base = str(fleet.base_url).rstrip("/")
    async with browser_page() as page:
        await page.goto(base + (await fleet.post("/api/auth/login-link")).json()["url"])
        await page.wait_for("document.getElementById('count-alerts') !== null", "the overview")
        assert await page.evaluate("document.getElementById('count-alerts').textContent") == "3"
        assert await page.evaluate("document.querySelectorAll('table.all-devices tbody tr').length") == 43
        assert await page.evaluate("window.__csp") == []
        await shot(page, artifacts_dir / "ops-overview.png")

        await page.goto(base + "/devices/env-tp-01")
        await page.wait_for(CHARTS_READY, "charts")
        counts = await page.evaluate(
            "Array.from(document.querySelectorAll('svg.chart')).map(s => [s.getAttribute('aria-label'), "
            "Number(s.dataset.points), s.querySelectorAll('polyline.mean').length])")
        temp = next(c for c in counts if c[0] == "temp_c")
        assert temp[1] > 100 and temp[2] == 2  # two runs: the two hours with no report are a gap
        # the band and the line are painted (the stylesheet reached the inline SVG)
        fill = await page.evaluate("getComputedStyle(document.querySelector('svg.chart polyline.mean')).stroke")
        assert fill == "rgb(31, 90, 153)"
        assert await page.evaluate("window.__csp") == []
        await shot(page, artifacts_dir / "ops-device-page.png")
        await page.goto(base + "/devices/env-tp-01?range=7d")
        await page.wait_for(CHARTS_READY, "7 days")
        await shot(page, artifacts_dir / "ops-device-page-7d.png")
    cam.close()
