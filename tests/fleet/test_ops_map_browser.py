"""The map and the alert pages in a real headless Chromium under the fleet's Content-Security-Policy:
the map over the sample ward outlines with dots in each state's colour and alert rings, a dot that
leads to its device; the alert list; an alert acknowledged with its button. Screenshots (1280 wide)
in test-artifacts/: ops-map.png, ops-map-offline.png, ops-alerts.png, ops-alert-acknowledged.png,
ops-rules.png."""

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleet.ops.models import Alert, AlertRule, AlertState, Severity
from tests.fleet.cdp import browser_page
from tests.fleet.ops_map_kit import WARDS_FILE, hearing, make_city, ops_settings, raise_alert
from tests.fleet.test_broadcast_pages_browser import click_and_wait, open_page, shot
from tests.support.fleet import running_fleet
from tests.support.mosquitto import Mosquitto


async def test_the_map_and_the_alerts_in_chromium(tmp_path: Path, mosquitto: Mosquitto, artifacts_dir: Path) -> None:
    outlines = tmp_path / "wards.geojson"
    shutil.copy(WARDS_FILE, outlines)
    settings = ops_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url, ward_outlines=outlines)
    async with running_fleet(settings) as http:
        await hearing(http)
        made = await make_city("city", per_ward=8)
        now = datetime.now(UTC)
        hot = await AlertRule.create(name="cabinet hot", kind="temp_high", params={"max_c": 70},
                                     severity=Severity.CRITICAL)
        for n, device_id in enumerate(made.online[:4]):
            await raise_alert(hot, device_id, now - timedelta(minutes=3 + 7 * n),
                              Severity.CRITICAL if n % 2 == 0 else Severity.MINOR,
                              summary=f"temperature {78 + n} °C above 70 °C")
        base = str(http.base_url).rstrip("/")
        async with browser_page() as page:
            await page.goto(base + (await http.post("/api/auth/login-link")).json()["url"])
            await page.wait_for("document.querySelector('nav .who') !== null", "a page after the login")
            await page.evaluate("document.querySelector('nav a[href=\"/map\"]').click()")
            await page.wait_for("document.getElementById('map') !== null && document.readyState === 'complete'",
                                "the map")
            drawn = await page.evaluate("document.querySelectorAll('#map .dots circle:not(.ring)').length")
            assert drawn == len(made.online) + len(made.offline) + len(made.never_seen) - len(made.unplaced)
            assert await page.evaluate("document.querySelectorAll('#map .wards path').length") == 8
            colours = await page.evaluate(
                "Object.fromEntries(['online', 'offline', 'never_seen'].map(s => [s, "
                "getComputedStyle(document.querySelector('#map circle.s-' + s)).fill]))")
            assert colours == {"online": "rgb(30, 125, 58)", "offline": "rgb(179, 38, 30)",
                               "never_seen": "rgb(154, 160, 166)"}, colours
            ring = await page.evaluate("getComputedStyle(document.querySelector('#map circle.ring')).stroke")
            assert ring == "rgb(179, 38, 30)"
            assert await page.evaluate("window.__csp") == []
            map_png = await shot(page, artifacts_dir / "ops-map.png")

            await open_page(page, f"{base}/map?state=offline&ward=", "document.getElementById('map')",
                            "the offline devices")
            assert await page.evaluate("document.querySelectorAll('#map .dots circle:not(.ring)').length") == len(
                [d for d in made.offline if d not in made.unplaced])
            offline_png = await shot(page, artifacts_dir / "ops-map-offline.png")
            target = made.offline[0]
            # an SVG link has no click(): a real mouse click's event on the dot
            await page.evaluate(f"document.querySelector('#map a[href=\"/devices/{target}\"] circle')"
                                ".dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true}))")
            await page.wait_for(f"location.pathname === '/devices/{target}' && document.readyState === 'complete'",
                                "the dot's device page")

            await open_page(page, f"{base}/alerts", "document.getElementById('alerts')", "the alerts")
            severities = await page.evaluate(
                "Array.from(document.querySelectorAll('#alerts tbody tr .sev')).map(s => s.textContent)")
            assert severities[:2] == ["critical", "critical"] and severities.count("minor") == 2
            assert await page.evaluate("window.__csp") == []
            alerts_png = await shot(page, artifacts_dir / "ops-alerts.png")

            first = int(await page.evaluate("document.querySelector('#alerts tbody tr').dataset.alert"))
            await open_page(page, f"{base}/alerts/{first}", "document.getElementById('ack-button')", "an alert")
            await click_and_wait(page, "#ack-button", "document.getElementById('done') !== null", "acknowledged")
            assert await page.evaluate("document.getElementById('alert-state').textContent") == "acknowledged"
            assert (await Alert.get(id=first)).state == AlertState.ACKNOWLEDGED
            assert await page.evaluate("window.__csp") == []
            acked_png = await shot(page, artifacts_dir / "ops-alert-acknowledged.png")

            await open_page(page, f"{base}/rules", "document.getElementById('rules')", "the rules")
            rules_png = await shot(page, artifacts_dir / "ops-rules.png")
    for png in (map_png, offline_png, alerts_png, acked_png, rules_png):
        assert png.stat().st_size > 10_000
