"""The asset pages (fleet/web/asset_pages.py, docs/assets.md "Pages") on the real fleet: the list and
its filters, an asset with its device, fittings and charts across devices, the create/edit form and
its refusals, fit and swap forms, roles, both languages, the device page's link; and in Chromium
at a phone's width (a technician opens the page from the QR label): nothing wider than the screen,
the swap form usable."""

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fleet.assets.models import Fitting
from fleet.auth.roles import Role
from fleet.models import HealthRecord
from tests.fleet.cdp import browser_page
from tests.support.fleet import token_for

POLE = "pole-tan-phu-0007"
SAME = {"Sec-Fetch-Site": "same-origin"}  # what a browser sends with the page's own form


async def _setup(fleet: httpx.AsyncClient) -> None:
    made = await fleet.post("/api/assets", json={
        "id": POLE, "kind": "pole", "name": "Cột 7, chợ Tân Phú", "ward": "tan-phu", "address": "Phú Riềng Đỏ 7",
        "latitude": 11.535, "longitude": 106.883, "attributes": {"lamp_type": "LED", "lamp_w": 120}})
    assert made.status_code == 201, made.text
    await fleet.post("/api/assets", json={"id": "mast-tan-binh-1", "kind": "speaker_mast", "ward": "tan-binh"})
    for device_id in ("lamp-7a", "lamp-7b"):
        assert (await fleet.post("/api/devices", json={"id": device_id, "kind": "esp32"})).status_code == 201
    assert (await fleet.post(f"/api/assets/{POLE}/fit", json={"device_id": "lamp-7a"})).status_code == 200
    now = datetime.now(UTC)
    await Fitting.filter(asset_id=POLE).update(fitted_at=now - timedelta(hours=6))
    for i in range(12):
        at = now - timedelta(hours=5, minutes=-20 * i)
        await HealthRecord.create(device_id="lamp-7a", ses=1, seq=i + 1, received_at=at, data={"rssi": -60 - i})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_asset_pages(fleet: httpx.AsyncClient) -> None:
    await _setup(fleet)
    listed = await fleet.get("/assets", params={"lang": "en"})
    assert listed.status_code == 200 and POLE in listed.text and "mast-tan-binh-1" in listed.text
    assert 'href="/assets"' in listed.text  # the menu entry
    only = await fleet.get("/assets", params={"kind": "speaker_mast", "lang": "en"})
    assert "mast-tan-binh-1" in only.text and POLE not in only.text
    page = await fleet.get(f"/assets/{POLE}", params={"lang": "en"})
    assert page.status_code == 200
    for text in ("lamp-7a", "street-light pole", "Phú Riềng Đỏ 7", "lamp_w", 'id="swap-form"', "svg",
                 'id="asset-check"'):
        assert text in page.text, text
    vi = await fleet.get(f"/assets/{POLE}", params={"lang": "vi"})
    assert "Thiết bị đang lắp" in vi.text and "Thay thế" in vi.text
    assert (await fleet.get("/assets/Not_An_Id")).status_code == 404
    assert (await fleet.get("/assets/no-such-pole")).status_code == 404

    # the form: refusals shown on the page, nothing stored; then created
    bad = await fleet.post("/assets/new", headers=SAME, data={"id": "cab-1", "kind": "cabinet", "latitude": "95",
                                                "attributes": "lamp_w = 1\nBad Key = 2"})
    assert bad.status_code == 422 and "latitude" in bad.text
    assert (await fleet.get("/api/assets/cab-1")).status_code == 404
    good = await fleet.post("/assets/new", headers=SAME, data={"id": "cab-1", "kind": "cabinet", "ward": "tan-phu",
                                                 "attributes": "hotspot = yes\nports = 4"}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/assets/cab-1?done=created"
    assert (await fleet.get("/api/assets/cab-1")).json()["attributes"] == {"hotspot": "yes", "ports": 4}
    edited = await fleet.post("/assets/cab-1/edit", headers=SAME, follow_redirects=False,
                              data={"kind": "cabinet", "ward": "tan-binh", "attributes": ""})
    assert edited.status_code == 303
    assert (await fleet.get("/api/assets/cab-1")).json()["ward"] == "tan-binh"

    # fit and swap forms; a swap posted from another site is refused before it reaches the page
    other = await fleet.post(f"/assets/{POLE}/swap", data={"device_id": "lamp-7b"},
                             headers={"Origin": "http://evil.example"})
    assert other.status_code == 403 and (await fleet.get(f"/api/assets/{POLE}")).json()["device_id"] == "lamp-7a"
    taken = await fleet.post("/assets/cab-1/fit", headers=SAME, data={"device_id": "lamp-7a"})
    assert taken.status_code == 409 and f"fitted to asset {POLE!r}".replace("'", "&#39;") in taken.text
    swapped = await fleet.post(f"/assets/{POLE}/swap", headers=SAME, data={"device_id": "lamp-7b"},
                               follow_redirects=False)
    assert swapped.status_code == 303 and swapped.headers["location"] == f"/assets/{POLE}?done=swapped"
    after = await fleet.get(f"/assets/{POLE}", params={"lang": "en", "done": "swapped"})
    assert "Swapped" in after.text and 'id="asset-device-link">lamp-7b<' in after.text
    assert "lamp-7a" in after.text  # the fittings: the old device stays in the asset's history
    assert (await fleet.get("/api/devices/lamp-7a")).json()["status"] == "replaced"
    device_page = await fleet.get("/devices/lamp-7a")
    assert f'<a href="/assets/{POLE}">{POLE}</a> (replaced)' in device_page.text
    assert f'<a href="/assets/{POLE}">{POLE}</a>' in (await fleet.get("/devices/lamp-7b")).text

    # a reader sees the page without forms and may not post them
    async with httpx.AsyncClient(base_url=fleet.base_url) as http:
        await token_for(http, Role.READ_ONLY)  # the pages' session cookie
        seen = await http.get(f"/assets/{POLE}")
        assert seen.status_code == 200 and 'id="swap-form"' not in seen.text
        assert (await http.post(f"/assets/{POLE}/remove", headers=SAME)).status_code == 403
        assert (await http.post("/assets/new", headers=SAME, data={"id": "x-1", "kind": "pole"})).status_code == 403
    assert (await fleet.get(f"/api/assets/{POLE}")).json()["device_id"] == "lamp-7b"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_asset_page_on_a_phone(fleet: httpx.AsyncClient, artifacts_dir: Path) -> None:
    await _setup(fleet)
    base = str(fleet.base_url).rstrip("/")
    async with browser_page() as page:
        await page.goto(base + (await fleet.post("/api/auth/login-link")).json()["url"])
        await page.wait_for("document.getElementById('count-alerts') !== null", "the overview, logged in")
        await page.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
        for lang in ("vi", "en"):
            await page.goto(f"{base}/assets/{POLE}?lang={lang}")
            await page.wait_for("document.readyState === 'complete' && document.getElementById('swap-form') !== null",
                                "the asset page")
            width = await page.evaluate("window.innerWidth")
            assert width == 390  # the page asked for no wider layout than the phone's
            assert await page.evaluate("document.documentElement.scrollWidth") <= width
            button = await page.evaluate("document.querySelector('#swap-form button').getBoundingClientRect().width")
            assert button >= 0.8 * width - 40  # a full-width button a thumb can hit
            assert await page.evaluate("document.querySelectorAll('svg.chart').length") >= 1
            assert await page.evaluate("window.__csp") == []
            data = base64.b64decode((await page.call("Page.captureScreenshot", format="png"))["data"])
            await asyncio.to_thread((artifacts_dir / f"asset-page-phone-{lang}.png").write_bytes, data)
