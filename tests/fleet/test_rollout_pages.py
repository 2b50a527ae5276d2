"""The rollout pages in a real Chromium under the fleet's Content-Security-Policy: the list with each
rollout's progress per state and why it paused, and a rollout's page with its devices. The
screenshots (1280x900) are test artifacts: test-artifacts/rollouts-page.png, rollout-page.png."""

import asyncio
import base64
from pathlib import Path

import httpx
import pytest

from tests.fleet.cdp import Page, browser_page
from tests.fleet.release_kit import SigningKey
from tests.fleet.rollout_kit import (
    lights,
    publish_release,
    register,
    rollout_fleet,
    signer,
    wait_online,
    wait_status,
)
from tests.support.mosquitto import Mosquitto
from tests.support.ota_updaters import Behaviour, herd

__all__ = ["rollout_fleet", "signer"]  # fixtures


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'fleet.sqlite3'}"


async def _shot(page: Page, path: Path) -> None:
    await page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    shot = await page.call("Page.captureScreenshot", format="png")
    await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))


async def test_the_rollout_pages_show_progress_per_state_and_why_a_rollout_paused(
        rollout_fleet: httpx.AsyncClient, mosquitto: Mosquitto, signer: SigningKey, artifacts_dir: Path) -> None:
    http = rollout_fleet
    good = await publish_release(http, signer, "0.2.0")
    slow = await publish_release(http, signer, "0.3.0")
    devices = lights("light-tp", 12)
    await register(http, devices)
    async with herd(mosquitto.port, devices, health_s=0.1) as flock:
        flock.behaviours[slow] = Behaviour(loop_factor=2.0)
        await wait_online(http, devices, health=5)
        first = await http.post("/api/rollouts", json={"release": good, "phases": [25, 100], "soak_s": 0.3,
                                                       "offers_per_min": 10_000})
        await wait_status(http, first.json()["id"], "done")
        second = await http.post("/api/rollouts", json={
            "release": slow, "phases": [25, 50, 100], "soak_s": 1, "offers_per_min": 10_000,
            "windows": {"light": "always"}})
        paused_id = second.json()["id"]
        paused = await wait_status(http, paused_id, "paused")
        assert paused["pause_reason"]["figure"] == "loop_ms"
        base = str(http.base_url).rstrip("/")
        async with browser_page() as page:
            await page.goto(base + (await http.post("/api/auth/login-link")).json()["url"])
            await page.wait_for("document.getElementById('count-online') !== null", "the status page")
            await page.evaluate("document.querySelector('nav a[href=\"/rollouts\"]').click()")
            await page.wait_for("document.querySelector('tr[data-rollout]') !== null", "the rollouts page")
            rows = await page.evaluate(
                "Array.from(document.querySelectorAll('tr[data-rollout]')).map(r => [r.dataset.rollout, "
                "r.className, r.querySelector('.counts').textContent, r.querySelector('.reason').textContent])")
            assert [r[:2] for r in rows] == [[str(paused_id), "rollout-paused"],
                                             [str(first.json()["id"]), "rollout-done"]]
            assert rows[1][2].startswith("12 confirmed · 0 in flight · 0 pending · 0 failed or rolled back")
            assert rows[0][2].startswith("3 confirmed · 0 in flight · 9 pending")
            assert rows[0][3] == "loop time (ms) worse by more than 25.0 % after the update on 3 devices of phase 1"
            assert await page.evaluate("document.querySelectorAll('svg.bar-chart rect').length") == 3
            assert await page.evaluate("window.__csp") == []
            await _shot(page, artifacts_dir / "rollouts-page.png")

            await page.evaluate(f"document.querySelector('tr[data-rollout=\"{paused_id}\"] a').click()")
            await page.wait_for("document.getElementById('rollout-status') !== null", "the rollout's page")
            assert await page.evaluate("document.getElementById('rollout-status').textContent") == "paused"
            breached = await page.evaluate(
                "Array.from(document.querySelectorAll('.breached tbody tr')).map(r => "
                "Array.from(r.cells).map(c => c.textContent))")
            assert len(breached) == 3 and all(row[1:3] == ["20.0", "40.0"] for row in breached)
            states = await page.evaluate(
                "Array.from(document.querySelectorAll('.rollout-devices tbody tr')).map(r => r.className)")
            assert sorted(states) == ["ota-confirmed"] * 3 + ["ota-pending"] * 9
            assert "loop_ms 20 → 40" in await page.evaluate("document.querySelector('.rollout-devices').textContent")
            assert await page.evaluate("window.__csp") == []
            await _shot(page, artifacts_dir / "rollout-page.png")
            await page.goto(base + "/rollouts/999")
            await page.wait_for("document.readyState === 'complete'", "an unknown rollout")
            assert "No rollout" in await page.evaluate("document.body.textContent")
    async with httpx.AsyncClient(base_url=str(http.base_url)) as anonymous:
        assert (await anonymous.get("/rollouts")).headers["location"] == "/login"
        assert (await anonymous.get(f"/rollouts/{paused_id}")).status_code == 303
