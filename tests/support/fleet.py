"""Run the real fleet service (uvicorn, real HTTP) inside a test, on free ports."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn

from fleet.app import create_app
from fleet.auth.people import create_user
from fleet.auth.roles import Role
from fleet.models import User
from fleet.settings import Settings
from tests.support.loop_thread import LoopThread
from tests.support.mosquitto import free_port

ADMIN = "admin-test"
ADMIN_PASSWORD = "correct horse battery staple"


def fleet_settings(database_url: str, mqtt_url: str | None, **extra: object) -> Settings:
    """Settings for a fleet under test; an external broker is an open one unless `broker_accounts` says."""
    extra.setdefault("broker_accounts", "none")
    # the ops worker (alert rules, notifications, retention) turns at start and then once a minute,
    # not every 5 s: most tests are about something else, and the ops tests drive its turns themselves
    extra.setdefault("ops_tick_s", 60.0)
    return Settings(database_url=database_url, mqtt_url=mqtt_url,
                    mqtt_client_id=f"fleet-test-{uuid.uuid4().hex[:8]}", http_port=free_port(),
                    embedded_broker_port=free_port(), **extra)


async def token_for(http: httpx.AsyncClient, role: Role, username: str | None = None) -> str:
    """A user with `role` (created if new) and a session token for them."""
    username = username or f"{role.value.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    if await User.get_or_none(username=username) is None:
        await create_user(username, ADMIN_PASSWORD, role)
    response = await http.post("/api/auth/login", json={"username": username, "password": ADMIN_PASSWORD})
    response.raise_for_status()
    return str(response.json()["token"])


async def enroll(http: httpx.AsyncClient, device_id: str, kind: str, ward: str) -> dict[str, str]:
    """Register a device through the API and issue its MQTT account (`http` as an admin): the
    answer's `mqtt` part (`username`, `password`, ...)."""
    made = await http.post("/api/devices", json={"id": device_id, "kind": kind, "ward": ward})
    assert made.status_code == 201, made.text
    issued = await http.post(f"/api/devices/{device_id}/credentials")
    assert issued.status_code == 200, issued.text
    return dict(issued.json()["mqtt"])


@asynccontextmanager
async def running_fleet(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The whole service as `fleet serve` runs it; yields an HTTP client for its base URL."""
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.http_port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        for _ in range(400):
            if server.started or task.done():
                break
            await asyncio.sleep(0.025)
        if not server.started:
            if task.done():
                task.result()
            raise TimeoutError("the fleet did not start")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=15) as http:
            http.app = app  # type: ignore[attr-defined]  # lets tests reach app.state.runtime
            token = await token_for(http, Role.ADMIN, ADMIN)
            http.headers["Authorization"] = f"Bearer {token}"
            yield http
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def fleet_in_thread(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The fleet on its own event loop in a thread.

    For tests that block on MQTT calls (paho's wait_for_publish, CONNACK waits) while the
    embedded broker must keep serving: with the fleet on the test's own loop, they would deadlock.
    """
    service = LoopThread("fleet-under-test", lambda: running_fleet(settings))
    token = (await asyncio.to_thread(service.start, 60)).headers["Authorization"]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=15) as http:
            http.headers["Authorization"] = token
            yield http
    finally:
        await asyncio.to_thread(service.stop, 30)
