"""Login links: redeemed once, within their lifetime, through their own endpoint only.

The attacks (issue 8, finding 10): the link's code presented as a bearer token (twice, then used
to mint a 365-day API token, then still redeemed as a link), as the session cookie, after it
expired; and the code read from the server's access log.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fleet.api.deps import SESSION_COOKIE
from fleet.models import ApiToken
from tests.support.browser import dump_dom
from tests.support.fleet import ADMIN, fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with running_fleet(fleet_settings(f"sqlite://{tmp_path / 'f.sqlite3'}", mosquitto.url)) as http:
        yield http


def _origin(http: httpx.AsyncClient) -> dict[str, str]:
    """What a browser sends with a form from the fleet's own login page."""
    return {"Origin": str(http.base_url).rstrip("/")}


async def _new_link(fleet: httpx.AsyncClient) -> str:
    response = await fleet.post("/api/auth/login-link")
    assert response.status_code == 201, response.text
    url = str(response.json()["url"])
    assert url.startswith("/login#code="), url  # the code rides in the fragment
    return url.split("#code=", 1)[1]


async def test_a_login_link_is_no_bearer_token_nor_cookie_and_works_once(fleet: httpx.AsyncClient) -> None:
    code = await _new_link(fleet)
    async with httpx.AsyncClient(base_url=fleet.base_url) as attacker:
        bearer = {"Authorization": f"Bearer {code}"}
        for _ in range(2):
            assert (await attacker.get("/api/auth/me", headers=bearer)).status_code == 401
        minted = await attacker.post("/api/auth/tokens", json={"name": "forever", "ttl_days": 365}, headers=bearer)
        assert minted.status_code == 401
        attacker.cookies.set(SESSION_COOKIE, code)
        assert (await attacker.get("/api/auth/me")).status_code == 401
        assert (await attacker.get("/")).status_code == 303  # to the login form
    assert "forever" not in {t["name"] for t in (await fleet.get("/api/auth/tokens")).json()}

    # its own endpoint redeems it, once
    async with httpx.AsyncClient(base_url=fleet.base_url) as browser:
        redeemed = await browser.post("/login/link", data={"code": code}, headers=_origin(browser))
        assert redeemed.status_code == 303 and redeemed.headers["location"] == "/"
        me = await browser.get("/api/auth/me")
        assert me.status_code == 200 and me.json()["username"] == ADMIN
    async with httpx.AsyncClient(base_url=fleet.base_url) as again:
        second = await again.post("/login/link", data={"code": code}, headers=_origin(again))
        assert second.status_code == 401 and "not valid" in second.text
        assert SESSION_COOKIE not in again.cookies
    trail = [e["action"] for e in (await fleet.get("/api/audit")).json()]
    assert trail.count("auth.login.link") == 1 and trail.count("auth.login.link.refused") == 1


async def test_an_expired_login_link_is_refused(fleet: httpx.AsyncClient) -> None:
    code = await _new_link(fleet)
    await ApiToken.filter(kind="link").update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    async with httpx.AsyncClient(base_url=fleet.base_url) as browser:
        late = await browser.post("/login/link", data={"code": code}, headers=_origin(browser))
        assert late.status_code == 401 and SESSION_COOKIE not in browser.cookies


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_log() -> Iterator[_Lines]:
    """uvicorn's access log, as `fleet serve` writes it at log level info."""
    logger = logging.getLogger("uvicorn.access")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_the_code_never_reaches_the_access_log(fleet: httpx.AsyncClient, access_log: _Lines) -> None:
    code = await _new_link(fleet)
    base = str(fleet.base_url).rstrip("/")
    dom = await asyncio.to_thread(dump_dom, f"{base}/login#code={code}")  # a real browser follows the link
    assert f'<span class="who">{ADMIN} · admin</span>' in dom  # logged in: the status page
    requests = [line for line in access_log.lines if "HTTP/" in line]
    assert any('"GET /login HTTP/' in line for line in requests), requests
    assert any('"POST /login/link HTTP/' in line for line in requests), requests
    assert not any(code in line for line in access_log.lines)
    # a code in the query string (the old link form) logs nobody in
    other = await _new_link(fleet)
    async with httpx.AsyncClient(base_url=fleet.base_url) as browser:
        page = await browser.get(f"/login?code={other}")
        assert page.status_code == 200 and SESSION_COOKIE not in browser.cookies
