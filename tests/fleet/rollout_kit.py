"""What the rollout tests share: a fleet that publishes releases and ticks its engine fast, a
published release, and ways to wait on a rollout."""

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.ota.rollouts import RolloutEngine
from fleet.runtime import Runtime
from tests.fleet.release_kit import TAR, ReleaseFolder, SigningKey, write_keys
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.ota_updaters import SimDevice
from tests.support.wait import async_wait_for

TICK_S = 0.1


@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return SigningKey.new()


@pytest.fixture
async def rollout_fleet(database_url: str, mosquitto: Mosquitto, tmp_path: Path,
                        signer: SigningKey) -> AsyncIterator[httpx.AsyncClient]:
    settings = fleet_settings(database_url, mosquitto.url, ota_dir=tmp_path / "ota",
                              public_url="http://fleet.example:8000",
                              ota_keys=write_keys(tmp_path / "release-keys.pem", signer))
    async with running_fleet(settings) as http:
        engine(http).tick_s = TICK_S
        yield http


def engine(http: httpx.AsyncClient) -> RolloutEngine:
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.rollouts is not None
    return runtime.rollouts


async def publish_release(http: httpx.AsyncClient, signer: SigningKey, version: str, kind: str = "esp32") -> str:
    folder = ReleaseFolder(kind, version, {"app.mpy": b"app " + version.encode() * 20})
    response = await http.post("/api/releases", content=folder.tar(folder.signed(signer)), headers=TAR)
    assert response.status_code == 201, response.text
    return str(response.json()["name"])


def lights(prefix: str, n: int, roles: list[str] | None = None) -> list[SimDevice]:
    return [SimDevice(f"{prefix}-{i:03d}", roles=list(roles or ["light"])) for i in range(n)]


async def register(http: httpx.AsyncClient, devices: Iterable[SimDevice], ward: str = "tan-phu") -> None:
    for device in devices:
        made = await http.post("/api/devices", json={"id": device.device_id, "kind": device.kind, "ward": ward})
        assert made.status_code == 201, made.text


async def wait_online(http: httpx.AsyncClient, devices: Iterable[SimDevice], health: int = 1) -> None:
    """Every device's birth is in, and at least `health` health reports of each."""
    wanted = list(devices)

    async def ready() -> bool:
        for device in wanted:
            got = (await http.get(f"/api/devices/{device.device_id}")).json()
            if got.get("state") != "online" or got.get("roles") != device.roles:
                return False
            if len((await http.get(f"/api/devices/{device.device_id}/health")).json()) < health:
                return False
        return True

    await async_wait_for(ready, timeout=30, what="the simulated devices online")


async def rollout(http: httpx.AsyncClient, rollout_id: int) -> dict[str, Any]:
    response = await http.get(f"/api/rollouts/{rollout_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_status(http: httpx.AsyncClient, rollout_id: int, status: str, timeout: float = 45) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        got = await rollout(http, rollout_id)
        return got if got["status"] == status else None

    got: dict[str, Any] | None = await async_wait_for(reached, timeout=timeout, interval=0.1,
                                                      what=f"rollout {rollout_id} {status}")
    assert got is not None
    return got


async def device_rows(http: httpx.AsyncClient, rollout_id: int) -> dict[str, dict[str, Any]]:
    response = await http.get(f"/api/rollouts/{rollout_id}/devices", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return {row["device_id"]: row for row in response.json()}


async def ticks(http: httpx.AsyncClient, n: int) -> None:
    """Wait until the engine has run `n` more ticks (the tests count ticks, they never time them)."""
    start = engine(http).ticks

    async def done() -> bool:
        return engine(http).ticks >= start + n

    await async_wait_for(done, what=f"{n} engine ticks")
