"""The role × endpoint matrix, login, tokens and the audit log, over real HTTP."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.auth.roles import Permission, Role, allows
from tests.support.fleet import ADMIN_PASSWORD, fleet_settings, running_fleet, token_for
from tests.support.mosquitto import Mosquitto

# (method, path, json body, the permission it needs); None: any logged-in person
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, Permission | None]] = [
    ("GET", "/api/devices", None, Permission.READ),
    ("GET", "/api/devices/m-dev", None, Permission.READ),
    ("GET", "/api/devices/m-dev/health", None, Permission.READ),
    ("GET", "/api/devices/m-dev/telemetry", None, Permission.READ),
    ("GET", "/api/devices/m-dev/events", None, Permission.READ),
    ("GET", "/api/devices/m-dev/gaps", None, Permission.READ),
    ("GET", "/api/devices/m-dev/desired", None, Permission.READ),
    ("GET", "/api/ingest/stats", None, Permission.READ),
    ("GET", "/api/enrollment-tokens", None, Permission.READ),
    ("POST", "/api/devices", {"id": "m-new-{role}", "kind": "pi"}, Permission.DEVICE_WRITE),
    ("PATCH", "/api/devices/m-dev", {"name": "x"}, Permission.DEVICE_WRITE),
    ("POST", "/api/devices/m-dev/commands", {"name": "ping"}, Permission.COMMAND),
    ("PUT", "/api/devices/m-dev/desired", {"doc": {"health_period_s": 30}}, Permission.DESIRED_STATE),
    ("POST", "/api/devices/m-dev/credentials", None, Permission.CREDENTIALS),
    ("POST", "/api/devices/m-dev/credentials/revoke", None, Permission.CREDENTIALS),
    ("POST", "/api/enrollment-tokens", {"kind": "esp32", "site": "market"}, Permission.ENROLLMENT),
    ("POST", "/api/devices/m-gone-{role}/decommission", None, Permission.DEVICE_DECOMMISSION),
    ("GET", "/api/users", None, Permission.USERS),
    ("POST", "/api/users", {"username": "u-{role}", "role": "read_only", "password": "a long enough pass"},
     Permission.USERS),
    ("GET", "/api/audit", None, Permission.AUDIT),
    ("GET", "/api/releases", None, Permission.READ),
    ("GET", "/api/releases/esp32-9.9.9", None, Permission.READ),
    ("POST", "/api/releases", None, Permission.RELEASES),  # allowed: 415, no tar sent
    ("DELETE", "/api/releases/esp32-9.9.9", None, Permission.RELEASE_DELETE),  # allowed: 404
    ("GET", "/api/auth/me", None, None),
    ("POST", "/api/auth/tokens", {"name": "tool"}, None),
]


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with running_fleet(fleet_settings(f"sqlite://{tmp_path / 'f.sqlite3'}", mosquitto.url)) as http:
        yield http


async def _call(http: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None,
                headers: dict[str, str]) -> httpx.Response:
    return await http.request(method, path, json=body, headers=headers)


async def test_every_endpoint_checks_the_role(fleet: httpx.AsyncClient) -> None:
    await fleet.post("/api/devices", json={"id": "m-dev", "kind": "pi"})
    for role in Role:
        await fleet.post("/api/devices", json={"id": f"m-gone-{role.value.replace('_', '-')}", "kind": "pi"})
    results: dict[tuple[str, str], int] = {}
    for role in Role:
        token = await token_for(fleet, role)
        headers = {"Authorization": f"Bearer {token}"}
        for method, path, body, permission in ENDPOINTS:
            slug = role.value.replace("_", "-")
            response = await _call(fleet, method, path.format(role=slug),
                                   {k: (v.format(role=slug) if isinstance(v, str) else v) for k, v in body.items()}
                                   if body else None, headers)
            expected_allowed = permission is None or allows(role, permission)
            results[(role.value, f"{method} {path}")] = response.status_code
            if expected_allowed:
                assert response.status_code not in (401, 403), (role, method, path, response.text)
            else:
                assert response.status_code == 403, (role, method, path, response.status_code)
                assert permission is not None and permission.value in response.json()["detail"]
    # nobody: 401 everywhere except the login and self-enrollment doors
    async with httpx.AsyncClient(base_url=fleet.base_url) as anonymous:  # no token, no cookie
        for method, path, body, _ in ENDPOINTS:
            response = await _call(anonymous, method, path.format(role="anon"), body, {})
            assert response.status_code == 401, (method, path)
    denied = sum(1 for code in results.values() if code == 403)
    assert denied > 0 and len(results) == len(Role) * len(ENDPOINTS)


async def test_login_tokens_and_audit_trail(fleet: httpx.AsyncClient) -> None:
    created = await fleet.post("/api/users", json={"username": "tech.lan", "role": "technician",
                                                   "password": "a long enough pass", "full_name": "Lan"})
    assert created.status_code == 201
    weak = await fleet.post("/api/users", json={"username": "weak", "role": "ops", "password": "short"})
    assert weak.status_code == 422 and "12" in weak.json()["detail"]
    bad = await fleet.post("/api/auth/login", json={"username": "tech.lan", "password": "wrong password!"})
    assert bad.status_code == 401
    fleet.cookies.clear()  # only the bearer headers below count
    good = await fleet.post("/api/auth/login", json={"username": "tech.lan", "password": "a long enough pass"})
    session = good.json()["token"]
    headers = {"Authorization": f"Bearer {session}"}
    me = (await fleet.get("/api/auth/me", headers=headers)).json()
    assert me["role"] == "technician" and "credentials" in me["permissions"]
    fleet.cookies.clear()
    tool = (await fleet.post("/api/auth/tokens", json={"name": "laptop"}, headers=headers)).json()["token"]
    tool_headers = {"Authorization": f"Bearer {tool}"}
    made = await fleet.post("/api/devices", json={"id": "by-tool", "kind": "esp32"}, headers=tool_headers)
    assert made.status_code == 201
    # disabling the person ends every session and tool token at once
    await fleet.patch("/api/users/tech.lan", json={"disabled": True})
    assert (await fleet.get("/api/devices", headers=tool_headers)).status_code == 401
    assert (await fleet.get("/api/devices", headers=headers)).status_code == 401
    audit = (await fleet.get("/api/audit")).json()
    trail = [(e["actor"], e["action"], e["target"]) for e in audit]
    assert ("tech.lan", "device.create", "by-tool") in trail
    assert ("tech.lan", "auth.login.failed", "") in trail
    assert ("admin-test", "user.update", "tech.lan") in trail
    assert all(e["source"] == "127.0.0.1" for e in audit if e["action"] == "device.create")
    assert "a long enough pass" not in str(audit) and ADMIN_PASSWORD not in str(audit)


async def test_enrollment_tokens_are_single_use_and_expire(fleet: httpx.AsyncClient) -> None:
    issued = (await fleet.post("/api/enrollment-tokens", json={"kind": "esp32", "site": "Tan Phu market"})).json()
    token = issued["token"]
    first = await fleet.post("/api/enroll", json={"token": token, "name": "lamp 7"}, headers={"Authorization": ""})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["device_id"].startswith("esp32-tan-phu-market-") and body["mqtt"]["password"]
    again = await fleet.post("/api/enroll", json={"token": token}, headers={"Authorization": ""})
    assert again.status_code == 410 and "already been used" in again.json()["detail"]
    unknown = await fleet.post("/api/enroll", json={"token": "ioc_not-a-real-token"}, headers={"Authorization": ""})
    assert unknown.status_code == 401
    short = (await fleet.post("/api/enrollment-tokens", json={"kind": "pi", "site": "s", "ttl_hours": 1})).json()
    from datetime import UTC, datetime, timedelta

    from fleet.models import EnrollmentToken
    await EnrollmentToken.filter(id=short["id"]).update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    expired = await fleet.post("/api/enroll", json={"token": short["token"]}, headers={"Authorization": ""})
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]
    device = (await fleet.get(f"/api/devices/{body['device_id']}")).json()
    assert device["site"] == "Tan Phu market" and device["kind"] == "esp32"
    tokens = (await fleet.get("/api/enrollment-tokens")).json()
    assert {t["id"]: t["used_by_device"] for t in tokens}[issued["id"]] == body["device_id"]
    assert "token" not in tokens[0]  # the secret is never listed
