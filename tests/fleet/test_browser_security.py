"""The pages' session against other sites (issue 8, findings 11 and 12), with a real Chromium.

CSRF: a page on another origin of the same site (another port of the same host: SameSite does
not separate them) submits a form to the fleet in a logged-in browser. Headers: CSP, framing,
sniffing, referrer, caching, on pages, API and docs; /docs works under that CSP.
"""

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from fleet.models import Device, DeviceStatus
from tests.fleet.cdp import Page, browser_page
from tests.support.fleet import ADMIN, ADMIN_PASSWORD, fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto, free_port


@pytest.fixture
async def http(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    """The fleet on SQLite; the client carries an admin's bearer token."""
    async with running_fleet(fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url)) as client:
        yield client


@asynccontextmanager
async def cookie_session(http: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client: logged in through the API, holding only the session cookie."""
    async with httpx.AsyncClient(base_url=str(http.base_url)) as browser:
        response = await browser.post("/api/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
        assert response.status_code == 200 and browser.cookies.get("ioc_session")
        yield browser


async def test_session_cookies_are_strict_and_httponly(http: httpx.AsyncClient) -> None:
    api = await http.post("/api/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
    page = await http.post("/login", data={"username": ADMIN, "password": ADMIN_PASSWORD},
                           headers={"Origin": str(http.base_url).rstrip("/"), "Authorization": ""})
    assert page.status_code == 303
    for response in (api, page):
        cookie = response.headers["set-cookie"].lower()
        assert "samesite=strict" in cookie and "httponly" in cookie and "path=/" in cookie
        assert "secure" not in cookie  # plain HTTP here: a Secure cookie would never come back


async def test_behind_a_tls_proxy_the_cookie_can_be_forced_secure(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """FLEET_COOKIE_SECURE: the fleet sees plain HTTP from the proxy, the browser sees HTTPS."""
    settings = fleet_settings(f"sqlite://{tmp_path / 'proxied.sqlite3'}", mosquitto.url, cookie_secure=True)
    async with running_fleet(settings) as proxied:
        login = await proxied.post("/api/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
        assert "; secure" in login.headers["set-cookie"].lower()


async def test_cross_site_requests_with_the_session_cookie_are_refused(http: httpx.AsyncClient) -> None:
    """What a browser sends for a form or fetch from http://127.0.0.1:<other port> (same site)."""
    own = str(http.base_url).rstrip("/")
    evil = f"http://127.0.0.1:{free_port()}"
    for device_id in ("csrf-1", "csrf-2", "csrf-3"):
        await http.post("/api/devices", json={"id": device_id, "kind": "pi"})
    async with cookie_session(http) as browser:
        cross_site = {"Origin": evil, "Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate"}
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        refused = [
            await browser.post("/api/devices/csrf-1/decommission", headers={**cross_site, **form}),
            await browser.post("/api/devices/csrf-1/decommission", headers={**cross_site,
                                                                           "Sec-Fetch-Site": "cross-site"}),
            await browser.post("/api/devices", json={"id": "csrf-new", "kind": "pi"}, headers=cross_site),
            await browser.patch("/api/devices/csrf-1", json={"name": "owned"}, headers={"Origin": evil}),
            await browser.post("/api/devices/csrf-1/decommission"),  # no Origin, no Sec-Fetch-Site
            await browser.post("/api/auth/logout", headers=cross_site),
        ]
        for response in refused:
            assert response.status_code == 403, (response.request.url, response.status_code)
            assert "cross-site request refused" in response.json()["detail"]
        assert (await Device.get(id="csrf-1")).status == DeviceStatus.REGISTERED
        assert (await Device.get(id="csrf-1")).name == ""
        assert await Device.filter(id="csrf-new").count() == 0
        assert (await browser.get("/api/auth/me")).status_code == 200  # still logged in: logout was refused

        # from the fleet's own page: the same requests go through
        same_origin = {"Origin": own, "Sec-Fetch-Site": "same-origin"}
        done = await browser.post("/api/devices/csrf-2/decommission", headers=same_origin)
        assert done.status_code == 200 and done.json()["status"] == "decommissioned"
        assert (await browser.post("/api/devices", json={"id": "csrf-4", "kind": "pi"},
                                   headers=same_origin)).status_code == 201
        # a browser too old for Sec-Fetch-Site: its Origin must be the fleet's own
        assert (await browser.post("/api/devices/csrf-3/decommission", headers={"Origin": own})).status_code == 200
    # tools with a bearer token send no Origin: not a browser, nothing to forge
    assert (await http.post("/api/devices", json={"id": "csrf-5", "kind": "pi"})).status_code == 201


async def test_a_cross_site_login_form_is_refused(http: httpx.AsyncClient) -> None:
    """Login CSRF: another site must not log a browser in (as the attacker) either."""
    async with httpx.AsyncClient(base_url=str(http.base_url)) as browser:
        response = await browser.post("/login", data={"username": ADMIN, "password": ADMIN_PASSWORD},
                                      headers={"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"})
        assert response.status_code == 403 and "set-cookie" not in response.headers
        response = await browser.post("/login/link", data={"code": "x"}, headers={"Sec-Fetch-Site": "cross-site"})
        assert response.status_code == 403


@contextmanager
def attacker_site(html: str) -> Iterator[str]:
    """Another origin on the same host (same site): serves one page."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="attacker-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


async def _log_in(page: Page, http: httpx.AsyncClient) -> None:
    link = (await http.post("/api/auth/login-link")).json()["url"]
    await page.goto(str(http.base_url).rstrip("/") + link)
    await page.wait_for("document.getElementById('count-online') !== null", "the status page after logging in")


async def test_a_form_on_another_origin_cannot_decommission_in_a_logged_in_browser(http: httpx.AsyncClient) -> None:
    base = str(http.base_url).rstrip("/")
    for device_id in ("victim-1", "victim-2"):
        await http.post("/api/devices", json={"id": device_id, "kind": "esp32"})
    attack = f"""<!doctype html><title>cheap tickets</title>
<form id="f" method="post" action="{base}/api/devices/victim-1/decommission"></form>
<script>document.getElementById("f").submit();</script>"""
    async with browser_page() as page:
        await _log_in(page, http)
        with attacker_site(attack) as evil:
            await page.goto(evil)
            text = await page.wait_for("location.port === '" + str(http.base_url.port) + "' && "
                                       "document.readyState === 'complete' && document.body.innerText",
                                       "the fleet's answer to the forged form")
        assert "cross-site request refused" in text, text[:300]
        assert (await Device.get(id="victim-1")).status == DeviceStatus.REGISTERED
        # the same request from the fleet's own page works: the session is real
        await page.goto(base + "/")
        await page.wait_for("document.getElementById('count-online') !== null", "the status page")
        status = await page.evaluate(
            "fetch('/api/devices/victim-2/decommission', {method: 'POST'}).then(r => r.status)")
        assert status == 200
        assert (await Device.get(id="victim-2")).status == DeviceStatus.DECOMMISSIONED


SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


async def test_security_headers_on_pages_api_and_errors(http: httpx.AsyncClient) -> None:
    async with cookie_session(http) as browser:
        answers = {
            "status page": await browser.get("/"),
            "login page": await browser.get("/login"),
            "docs": await browser.get("/docs"),
            "openapi": await browser.get("/openapi.json"),
            "api": await http.get("/api/devices"),
            "api 404": await http.get("/api/devices/no-such-device"),
            "api 422": await http.get("/api/devices", params={"limit": 0}),
            "api 401": await browser.get("/api/devices", headers={"Authorization": "Bearer forged"}),
            "healthz": await http.get("/healthz"),
        }
        for what, response in answers.items():
            assert response.status_code < 500, what
            for name, value in SECURITY_HEADERS.items():
                assert response.headers.get(name) == value, (what, name)
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, what
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, what
            assert response.headers["cache-control"] == "no-store", what
        static = await browser.get("/static/fleet.css")
        assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")
        assert static.headers["x-content-type-options"] == "nosniff"


async def test_docs_and_openapi_need_a_login(http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(http.base_url)) as anonymous:
        assert (await anonymous.get("/openapi.json")).status_code == 401
        docs = await anonymous.get("/docs")
        assert docs.status_code == 303 and docs.headers["location"] == "/login"
        assert (await anonymous.get("/redoc")).status_code == 404
    assert (await http.get("/openapi.json")).json()["info"]["title"] == "IOC fleet"


async def test_swagger_ui_works_under_the_content_security_policy(http: httpx.AsyncClient) -> None:
    """Served from the fleet itself (no CDN), with no inline script: a real browser renders it."""
    operations = sum(len(item) for item in (await http.get("/openapi.json")).json()["paths"].values())
    async with browser_page() as page:
        await _log_in(page, http)
        assert await page.evaluate("window.__csp") == []  # the status page
        await page.goto(str(http.base_url).rstrip("/") + "/docs")
        shown = await page.wait_for("document.querySelectorAll('.opblock').length", "Swagger UI's operations")
        assert shown == operations
        assert await page.evaluate("window.__csp") == []
        await page.goto(str(http.base_url).rstrip("/") + "/login")
        await page.wait_for("document.readyState === 'complete'", "the login page")
        assert await page.evaluate("window.__csp") == []


async def test_a_page_cannot_be_framed_by_another_site(http: httpx.AsyncClient) -> None:
    base = str(http.base_url).rstrip("/")
    framing = f'<!doctype html><iframe src="{base}/login"></iframe>'
    async with browser_page() as page:
        with attacker_site(framing) as evil:
            await page.goto(evil)
            await page.wait_for("document.readyState === 'complete'", "the framing page")

            async def frame_url() -> str:
                tree = await page.call("Page.getFrameTree")
                frames = tree["frameTree"].get("childFrames", [])
                return str(frames[0]["frame"]["url"]) if frames else ""

            url = ""
            for _ in range(300):  # a deadline for a stuck page, not a speed test
                url = await frame_url()
                if url not in ("", "about:blank"):
                    break
                await asyncio.sleep(0.1)
        # refused frames show Chromium's error page instead of the fleet's
        assert url.startswith("chrome-error://"), url
