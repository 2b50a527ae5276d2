"""Run the real fleet service (uvicorn, real HTTP) inside a test, on free ports."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn

from fleet.app import create_app
from fleet.settings import Settings
from tests.support.mosquitto import free_port


def fleet_settings(database_url: str, mqtt_url: str | None, **extra: object) -> Settings:
    return Settings(database_url=database_url, mqtt_url=mqtt_url,
                    mqtt_client_id=f"fleet-test-{uuid.uuid4().hex[:8]}", http_port=free_port(),
                    embedded_broker_port=free_port(), **extra)


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
            yield http
    finally:
        server.should_exit = True
        await task
