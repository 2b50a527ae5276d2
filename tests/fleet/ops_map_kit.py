"""A small city for the map, the GIS layer and the alert pages' tests: devices with and without
coordinates in the sample wards (demo/data/wards.geojson), in each state, some with open alerts;
a person's browser (the session cookie and the Origin its forms send)."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from fleet.auth.people import create_user
from fleet.auth.roles import Role
from fleet.models import Device, DeviceStatus
from fleet.ops.models import Alert, AlertEvent, AlertRule, AlertState, Severity
from fleet.settings import Settings
from tests.support.fleet import ADMIN_PASSWORD, fleet_settings, running_fleet
from tests.support.wait import async_wait_for

WARDS_FILE = Path(__file__).resolve().parents[2] / "demo" / "data" / "wards.geojson"
# (ward, a point inside its outline in the sample file)
PLACES = {"tan-phu": (106.883, 11.555), "tan-binh": (106.883, 11.535), "tan-xuan": (106.863, 11.535),
          "tan-dong": (106.903, 11.535), "tien-thanh": (106.903, 11.555)}


def ops_settings(database_url: str, mqtt_url: str, **extra: object) -> Settings:
    """A fleet whose ops worker turns once at its start, then not for 300 s: the alerts a test makes
    stay as made (the rule engine would resolve them, their devices' health does not hold them true)."""
    return fleet_settings(database_url, mqtt_url, ops_tick_s=300, **extra)


@asynccontextmanager
async def quiet_fleet(database_url: str, mqtt_url: str, **extra: object) -> AsyncIterator[httpx.AsyncClient]:
    async with running_fleet(ops_settings(database_url, mqtt_url, **extra)) as http:
        yield http


@dataclass(frozen=True)
class Made:
    online: list[str]
    offline: list[str]
    never_seen: list[str]
    unplaced: list[str]  # no coordinates
    alerted: dict[str, int]  # device -> alerts not resolved


async def hearing(http: httpx.AsyncClient) -> None:
    """Until the fleet hears the broker (else every seen device is `unknown`)."""
    async def heard() -> bool:
        return (await http.get("/healthz")).status_code == 200
    await async_wait_for(heard, what="the fleet hearing its broker")


async def make_city(prefix: str, per_ward: int = 4) -> Made:
    now = datetime.now(UTC)
    devices, online, offline, never, unplaced = [], [], [], [], []
    for w, (ward, (lon, lat)) in enumerate(sorted(PLACES.items())):
        for n in range(per_ward):
            device_id = f"{prefix}-{ward}-{n}"
            kind = "pi" if n % 2 else "esp32"
            place = {"latitude": lat + 0.001 * n, "longitude": lon + 0.0015 * (n - w % 2)}
            which = n % 4
            if which == 0:  # online
                extra = {"online": True, "session": 1, "last_seen_at": now, "last_seen_ms": int(now.timestamp() * 1000),
                         "status": DeviceStatus.ACTIVE}
                online.append(device_id)
            elif which == 1:  # offline: its will came
                extra = {"online": False, "session": 1, "last_seen_at": now - timedelta(minutes=9),
                         "last_seen_ms": int((now - timedelta(minutes=9)).timestamp() * 1000),
                         "last_death_at": now - timedelta(minutes=8), "last_death_reason": "lost",
                         "status": DeviceStatus.ACTIVE}
                offline.append(device_id)
            elif which == 2:  # registered, never heard
                extra = {}
                never.append(device_id)
            else:  # no coordinates
                place = {}
                extra = {}
                never.append(device_id)
                unplaced.append(device_id)
            devices.append(Device(id=device_id, kind=kind, ward=ward, name=f"{kind} {n} in {ward}",
                                  tags=["light"] if kind == "esp32" else [], roles=["light"] if kind == "esp32"
                                  else ["camera"], fw="1.2.0", **place, **extra))
    await Device.bulk_create(devices)
    rule = await AlertRule.create(name=f"{prefix} offline", kind="offline", params={"for_s": 60},
                                  severity=Severity.MAJOR)
    alerted: dict[str, int] = {}
    for device_id in offline[:3]:
        await raise_alert(rule, device_id, now)
        alerted[device_id] = 1
    # a resolved one does not count
    gone = await raise_alert(rule, online[0], now - timedelta(hours=2))
    gone.state, gone.live_key, gone.resolved_at = AlertState.RESOLVED, None, now - timedelta(hours=1)
    await gone.save()
    return Made(online, offline, never, unplaced, alerted)


async def raise_alert(rule: AlertRule, device_id: str, at: datetime, severity: Severity | None = None,
                      summary: str | None = None) -> Alert:
    device = await Device.get(id=device_id)
    alert = await Alert.create(rule=rule, kind=rule.kind, device_id=device_id, device_kind=device.kind,
                               ward=device.ward, severity=severity or rule.severity, live_key=f"{rule.id}:{device_id}",
                               summary=summary or f"{device_id} offline for more than 60 s", value={"for_s": 61},
                               raised_at=at, last_true_at=at)
    await AlertEvent.create(alert=alert, at=at, action="raised", notify="none")
    return alert


@asynccontextmanager
async def browser(http: httpx.AsyncClient, role: Role) -> AsyncIterator[httpx.AsyncClient]:
    """A person's browser: logged in with the session cookie, sending its Origin with forms."""
    username = f"{role.value.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    await create_user(username, ADMIN_PASSWORD, role)
    base = str(http.base_url).rstrip("/")
    async with httpx.AsyncClient(base_url=base, headers={"Origin": base}, timeout=60,
                                 follow_redirects=True) as client:
        login = await client.post("/api/auth/login", json={"username": username, "password": ADMIN_PASSWORD})
        assert login.status_code == 200 and client.cookies.get("ioc_session")
        client.headers["X-Test-User"] = username
        yield client
