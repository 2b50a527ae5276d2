"""The relay pages (docs/relay.md, "Pages"): /relay, an endpoint's page and the forms, through the
API's own body models and route functions (a bad URL or topic refused with the API's reason and
nothing saved); the secret shown once; dead letters replayed from the page; admin only (others 403,
nobody to the login page; the menu link for admins only); a form from another site refused; English
and Vietnamese. Screenshots of /relay and of an endpoint's page in headless Chromium:
test-artifacts/relay-page.png, relay-endpoint-page.png."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fleet.auth.roles import Role
from fleet.models import AuditEntry
from fleet.relay.models import DeliveryStatus, RelayDelivery, RelayEndpoint, RelayRoute
from tests.fleet.cdp import browser_page
from tests.fleet.ops_map_kit import browser
from tests.fleet.test_ops_dashboard_browser import shot
from tests.fleet.test_relay_api import dead_letters
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with running_fleet(fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url)) as http:
        yield http


async def test_relay_pages_through_the_forms(fleet: httpx.AsyncClient) -> None:
    async with browser(fleet, Role.ADMIN) as admin:
        made = await admin.post("/relay/endpoints/new", data={
            "kind": "webhook", "name": "video-wall", "url": "https://wall.ioc.example/events", "timeout_s": "5",
            "max_attempts": "8", "enabled": "yes"})
        assert made.status_code == 200 and 'id="done"' in made.text, made.text[-2000:]
        wall = await RelayEndpoint.get(name="video-wall")
        assert (wall.timeout_s, wall.max_attempts, wall.enabled) == (5.0, 8, True)
        assert 'id="secret"' in made.text and wall.secret in made.text  # once, in the answer
        shown = await admin.get(f"/relay/endpoints/{wall.id}")
        assert shown.status_code == 200 and wall.secret not in shown.text and 'id="secret"' not in shown.text

        bad = await admin.post("/relay/endpoints/new", data={"kind": "webhook", "name": "bad", "url": "ftp://x"})
        assert bad.status_code == 422 and "http:// or https://" in bad.text
        topic = await admin.post("/relay/endpoints/new", data={"kind": "mqtt", "name": "bad",
                                                               "url": "mqtt://broker.example:1883",
                                                               "topic": "ioc/{secret}/#", "password": "pw-typed"})
        assert topic.status_code == 422 and "no wildcard" in topic.text and "pw-typed" not in topic.text
        assert not await RelayEndpoint.filter(name="bad").exists()
        broker = await admin.post("/relay/endpoints/new", data={
            "kind": "mqtt", "name": "ioc-broker", "url": "mqtt://broker.ioc.example:1883",
            "topic": "city/{ward}/{type}", "username": "fleet", "password": "broker-pass", "enabled": "yes"})
        assert broker.status_code == 200 and "broker-pass" not in broker.text
        mqtt = await RelayEndpoint.get(name="ioc-broker")
        assert (mqtt.topic, mqtt.username, mqtt.password) == ("city/{ward}/{type}", "fleet", "broker-pass")
        # an edit with the password left empty keeps it
        edited = await admin.post(f"/relay/endpoints/{mqtt.id}", data={
            "name": "ioc-broker", "url": "mqtts://broker.ioc.example:8883", "topic": "city/{ward}/{device}",
            "username": "fleet", "password": "", "retry_max_s": "600"})
        assert edited.status_code == 200 and 'id="done"' in edited.text, edited.text[-2000:]
        mqtt = await RelayEndpoint.get(id=mqtt.id)
        assert (mqtt.url, mqtt.topic, mqtt.password, mqtt.retry_max_s) == (
            "mqtts://broker.ioc.example:8883", "city/{ward}/{device}", "broker-pass", 600.0)
        refused = await admin.post(f"/relay/endpoints/{mqtt.id}", data={"name": "ioc-broker", "url": "https://x",
                                                                        "topic": "a/b"})
        assert refused.status_code == 422 and "mqtt://host:port" in refused.text

        # routes
        route = await admin.post("/relay/routes/new", data={
            "name": "security to the wall", "endpoint_id": str(wall.id), "categories": ["security", "traffic_safety"],
            "phases": "start", "wards": "ben-nghe, ben-thanh", "types": "motion", "min_severity": "warning",
            "enabled": "yes"})
        assert route.status_code == 200 and 'id="done"' in route.text, route.text[-2000:]
        stored = await RelayRoute.get(name="security to the wall")
        assert (stored.categories, stored.phases, stored.wards, stored.types, stored.min_severity,
                stored.endpoint_id) == (["security", "traffic_safety"], ["start"], ["ben-nghe", "ben-thanh"],  # type: ignore[attr-defined]
                                        ["motion"], "warning", wall.id)
        wrong = await admin.post("/relay/routes/new", data={"name": "x", "endpoint_id": str(wall.id),
                                                            "types": "Not A Type", "categories": "fire"})
        assert wrong.status_code == 422 and "categories" in wrong.text and "types" in wrong.text
        saved = await admin.post(f"/relay/routes/{stored.id}", data={
            "name": "security to the broker", "endpoint_id": str(mqtt.id), "categories": "security"})
        assert saved.status_code == 200 and 'id="done"' in saved.text
        stored = await RelayRoute.get(id=stored.id)
        assert (stored.name, stored.endpoint_id, stored.wards, stored.enabled, stored.min_severity) == (  # type: ignore[attr-defined]
            "security to the broker", mqtt.id, [], False, None)

        # dead letters: listed with a replay button each; one replayed, then the rest
        await admin.post(f"/relay/endpoints/{wall.id}/disable")  # the worker leaves its rows alone
        dead = await dead_letters(wall.id, "pi-q1-0007", 3)
        listing = await admin.get("/relay")
        assert listing.status_code == 200 and "video-wall" in listing.text and "security to the broker" in listing.text
        page = await admin.get(f"/relay/endpoints/{wall.id}")
        assert page.text.count('class="replay"') >= 3 and f'action="/relay/deliveries/{dead[0].id}/replay"' in page.text
        one = await admin.post(f"/relay/deliveries/{dead[0].id}/replay")
        assert one.status_code == 200 and 'id="done"' in one.text
        row = await RelayDelivery.get(id=dead[0].id)
        assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 0)
        rest = await admin.post(f"/relay/endpoints/{wall.id}/replay")
        assert rest.status_code == 200
        assert await RelayDelivery.filter(endpoint_id=wall.id, status=DeliveryStatus.PENDING).count() == 3
        # rotate: the new secret on the answer page only
        rotated = await admin.post(f"/relay/endpoints/{wall.id}/rotate", data={"previous_valid_s": "3600"})
        wall = await RelayEndpoint.get(id=wall.id)
        assert rotated.status_code == 200 and wall.secret in rotated.text and wall.previous_secret is not None
        assert wall.previous_until is not None and wall.previous_until - datetime.now(UTC) <= timedelta(hours=1)
        assert wall.secret not in (await admin.get(f"/relay/endpoints/{wall.id}")).text
        enabled = await admin.post(f"/relay/endpoints/{wall.id}/enable")
        assert enabled.status_code == 200 and (await RelayEndpoint.get(id=wall.id)).enabled
        tested = await admin.post(f"/relay/endpoints/{wall.id}/test")
        assert tested.status_code == 200 and await RelayDelivery.filter(device_id="relay-test").exists()
        # audited as the person
        who = admin.headers["X-Test-User"]
        actions = {str(a) for a in await AuditEntry.filter(actor=who).values_list("action", flat=True)}
        assert {"relay.endpoint.create", "relay.endpoint.update", "relay.route.create", "relay.route.update",
                "relay.delivery.replay", "relay.endpoint.replay", "relay.endpoint.rotate", "relay.endpoint.enable",
                "relay.endpoint.disable", "relay.endpoint.test"} <= actions

        # Vietnamese; the menu's link for admins
        vi = await admin.get("/relay", params={"lang": "vi"})
        assert "Chuyển tiếp tới IOC" in vi.text and 'href="/relay">Chuyển tiếp</a>' in vi.text
        assert 'href="/relay">Relay</a>' in (await admin.get("/relay", params={"lang": "en"})).text

        # a form posted from another site: refused before it reaches the page
        base = str(fleet.base_url).rstrip("/")
        async with httpx.AsyncClient(base_url=base, cookies=admin.cookies,
                                     headers={"Origin": "http://evil.example"}) as other_site:
            crossed = await other_site.post(f"/relay/endpoints/{wall.id}/disable")
            assert crossed.status_code == 403 and "cross-site" in crossed.text
        assert (await RelayEndpoint.get(id=wall.id)).enabled

        # route and endpoint deleted from their pages
        assert (await admin.post(f"/relay/routes/{stored.id}/delete")).status_code == 200
        assert not await RelayRoute.filter(id=stored.id).exists()
        assert (await admin.post(f"/relay/endpoints/{mqtt.id}/delete")).status_code == 200
        assert not await RelayEndpoint.filter(id=mqtt.id).exists()

    for role in (Role.OPS, Role.IOC_OPERATOR, Role.READ_ONLY):
        async with browser(fleet, role) as other:
            overview = await other.get("/")
            assert 'href="/relay"' not in overview.text
            for path in ("/relay", f"/relay/endpoints/{wall.id}", "/relay/endpoints/new", "/relay/routes/new"):
                assert (await other.get(path)).status_code == 403, (role, path)
            for path in (f"/relay/endpoints/{wall.id}/disable", f"/relay/endpoints/{wall.id}/rotate",
                         "/relay/endpoints/new", f"/relay/deliveries/{dead[1].id}/replay"):
                answer = await other.post(path, data={"kind": "webhook", "name": "x", "url": "https://x.example"})
                assert answer.status_code == 403 and wall.secret not in answer.text, (role, path)
    assert (await RelayEndpoint.get(id=wall.id)).enabled and await RelayEndpoint.all().count() == 1
    async with httpx.AsyncClient(base_url=str(fleet.base_url)) as nobody:
        answer = await nobody.get("/relay")
        assert answer.status_code == 303 and answer.headers["location"] == "/login"


async def test_relay_page_in_chromium(fleet: httpx.AsyncClient, artifacts_dir: Path) -> None:
    http = fleet
    wall = (await http.post("/api/relay/endpoints", json={"name": "video-wall", "kind": "webhook",
                                                          "url": "https://wall.ioc.example/events"})).json()
    broker = (await http.post("/api/relay/endpoints", json={"name": "ioc-broker", "kind": "mqtt",
                                                            "url": "mqtts://broker.ioc.example:8883",
                                                            "username": "fleet", "password": "pw"})).json()
    warehouse = (await http.post("/api/relay/endpoints", json={"name": "data-warehouse", "kind": "webhook",
                                                               "url": "https://dw.ioc.example/in"})).json()
    for name, endpoint, filters in (
            ("security to the wall", wall, {"categories": ["security"], "min_severity": "warning"}),
            ("traffic to the broker", broker, {"categories": ["traffic_safety"], "wards": ["ben-nghe"]}),
            ("everything to the warehouse", warehouse, {})):
        assert (await http.post("/api/relay/routes", json={"name": name, "endpoint_id": endpoint["id"],
                                                          **filters})).status_code == 201
    await http.post(f"/api/relay/endpoints/{warehouse['id']}/disable")
    await RelayEndpoint.filter(id=warehouse["id"]).update(disabled_reason="410 Gone twice in a row",
                                                          last_error="410 Gone", consecutive_failures=2)
    await dead_letters(warehouse["id"], "pi-q1-0007", 4)
    await RelayEndpoint.filter(id=wall["id"]).update(last_success_at=datetime.now(UTC))
    base = str(http.base_url).rstrip("/")
    async with browser_page() as page:
        await page.goto(base + (await http.post("/api/auth/login-link")).json()["url"])
        # logged in once a page names the viewer (the login page itself has a menu too)
        await page.wait_for("document.querySelector('nav .who') !== null", "the login link redeemed")
        await page.goto(base + "/relay?lang=en")
        await page.wait_for("document.getElementById('endpoints') !== null", "the relay page")
        rows = await page.evaluate("document.querySelectorAll('#endpoints tbody tr[data-endpoint]').length")
        dead = await page.evaluate(
            f"document.querySelector('#endpoints tr[data-endpoint=\"{warehouse['id']}\"] td.dead').textContent")
        assert rows == 3 and dead.strip() == "4"
        path = await shot(page, artifacts_dir / "relay-page.png")
        await page.goto(base + f"/relay/endpoints/{warehouse['id']}?lang=en")
        await page.wait_for("document.getElementById('dead') !== null", "the endpoint's page")
        assert await page.evaluate("document.querySelectorAll('#dead button.replay').length") == 4
        await shot(page, artifacts_dir / "relay-endpoint-page.png")
    assert path.stat().st_size > 0
