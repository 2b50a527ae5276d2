"""The status page's verdict, its banner, and the device page it links to (issue 10 §3 and §4), in
a real Chromium under the fleet's Content-Security-Policy; the screenshots are test artifacts."""

import asyncio
import base64
from pathlib import Path

import httpx

from tests.fleet.cdp import browser_page
from tests.support.browser import screenshot
from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


async def _state(http: httpx.AsyncClient, device_id: str) -> str | None:
    response = await http.get(f"/api/devices/{device_id}")
    return response.json()["state"] if response.status_code == 200 else None


async def test_a_click_on_a_device_opens_its_page_with_the_apis_verdict_and_the_banner_tells_an_outage(
        tmp_path: Path, mosquitto: Mosquitto, artifacts_dir: Path) -> None:
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url, mqtt_probe_s=0.5,
                              presence_sweep_s=0.2)
    async with running_fleet(settings) as http:
        base = str(http.base_url).rstrip("/")
        lamp = ScriptedDevice(mosquitto.port, "light-page-01", ses=4)
        lamp.birth(kind="esp32", roles=["light"], period_s=30)
        for seq in range(3):
            lamp.health(seq=seq, heap_free=41_000 + seq, rssi=-60)
        quiet = ScriptedDevice(mosquitto.port, "quiet-page-01", ses=1)
        quiet.birth(period_s=1)  # and then nothing: offline as silent in 3 s

        async def settled() -> bool:
            return (await _state(http, "light-page-01") == "online"
                    and await _state(http, "quiet-page-01") == "offline"
                    and len((await http.get("/api/devices/light-page-01/health")).json()) == 3)

        await async_wait_for(settled, timeout=60, what="one online, one silent")
        async with browser_page() as page:
            await page.goto(base + (await http.post("/api/auth/login-link")).json()["url"])
            await page.wait_for("document.getElementById('count-online') !== null", "the status page")
            rows = await page.evaluate(
                "Array.from(document.querySelectorAll('tr[data-device]')).map(r => [r.dataset.device, "
                "r.className, r.querySelector('.why') ? r.querySelector('.why').textContent : ''])")
            assert ["light-page-01", "state-online", ""] in rows
            assert ["quiet-page-01", "state-offline", "silent: nothing heard for 3 health periods"] in rows
            assert await page.evaluate("document.getElementById('broker-banner')") is None
            # the device's link leads to a page for a person, not to the API's JSON
            await page.evaluate("document.querySelector('tr[data-device=\"light-page-01\"] a').click()")
            await page.wait_for("document.getElementById('device-state') !== null", "the device page")
            assert await page.evaluate("location.pathname") == "/devices/light-page-01"
            assert await page.evaluate("document.getElementById('device-state').textContent") == "online"
            logged = await page.evaluate("document.querySelectorAll('.health-log tbody tr').length")
            assert logged == 3
            assert "heap 41002 B" in await page.evaluate("document.querySelector('.health-log').textContent")
            assert await page.evaluate("window.__csp") == []  # nothing the policy had to block
            shot = await page.call("Page.captureScreenshot", format="png")
            (artifacts_dir / "device-page.png").write_bytes(base64.b64decode(shot["data"]))

            mosquitto.kill()  # the fleet no longer hears its devices: it says so, and does not guess

            async def unknown() -> bool:
                return await _state(http, "light-page-01") == "unknown"

            await async_wait_for(unknown, timeout=60, what="the verdict unknown")
            await page.goto(base + "/devices/quiet-page-01")
            await page.wait_for("document.getElementById('broker-banner') !== null", "the banner")
            banner = await page.evaluate("document.getElementById('broker-banner').textContent")
            assert "not connected to the MQTT broker" in banner and f":{mosquitto.port}" in banner
            assert await page.evaluate("document.getElementById('device-state').textContent") == "unknown"
            assert await page.evaluate("window.__csp") == []
            await page.goto(base + "/devices/no-such-device")
            await page.wait_for("document.readyState === 'complete'", "the page of an unknown device")
            assert "No device" in await page.evaluate("document.body.textContent")
        shot = await asyncio.to_thread(screenshot, base + (await http.post("/api/auth/login-link")).json()["url"],
                                       artifacts_dir / "status-page-broker-down.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        mosquitto.start()
        await async_wait_for(lambda: _state(http, "light-page-01"), timeout=60, what="the fleet back")


async def test_the_pages_need_a_login_and_an_unknown_device_is_a_404(fleet: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(fleet.base_url)) as anonymous:
        page = await anonymous.get("/devices/light-page-02")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        login = await anonymous.post("/api/auth/login-link", headers=fleet.headers)
        redeemed = await anonymous.post("/login/link", data={"code": login.json()["url"].split("code=")[1]},
                                        headers={"Origin": str(fleet.base_url).rstrip("/")})
        assert redeemed.status_code == 303
        missing = await anonymous.get("/devices/light-page-02")
        assert missing.status_code == 404 and "No device" in missing.text
        assert "default-src 'none'" in missing.headers["content-security-policy"]
        assert (await anonymous.get("/devices/NOT_AN_ID")).status_code == 422
