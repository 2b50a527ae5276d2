"""The alerts and rules API on a running fleet (SQLite: the database's part is tested on both in
test_ops_alerts_engine.py): the lifecycle through HTTP with its 4xx, rules edited and refused,
groups, permissions; and one alert raised and cleared by what a device publishes over MQTT."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.auth.roles import Role
from fleet.ingest.silence import unix_ms
from fleet.models import Device, DeviceStatus, EventRecord
from fleet.ops.models import NotificationChannel
from fleet.ops.rules import BUILTINS
from fleet.runtime import Runtime
from fleet.worker import Tick
from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_settings, running_fleet, token_for
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    # ops_tick_s 300: the worker's own turns (one at start) stay out of the way of the test's ticks
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url, ops_tick_s=300)
    async with running_fleet(settings) as http:
        yield http


def alert_tick(http: httpx.AsyncClient) -> Tick:
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.ops is not None
    return dict(runtime.ops.parts)["alerts"]


async def a_hot_pi(device_id: str, ward: str = "tan-xuan") -> None:
    now = datetime.now(UTC)
    await Device.create(id=device_id, kind="pi", ward=ward, status=DeviceStatus.ACTIVE, online=True, session=1,
                        last_seen_at=now, last_seen_ms=unix_ms(now), health_period_s=60,
                        last_health={"temp_c": 88.0, "disk_pct": 95}, last_health_at=now)


async def one_alert(http: httpx.AsyncClient, device_id: str, kind: str) -> dict[str, Any]:
    page = (await http.get("/api/ops/alerts", params={"device": device_id, "kind": kind})).json()
    assert page["total"] == 1, page
    return dict(page["items"][0])


async def test_alert_lifecycle_through_the_api(fleet: httpx.AsyncClient) -> None:
    http = fleet
    await a_hot_pi("api-hot-1")
    await a_hot_pi("api-hot-2", ward="tien-thanh")
    await alert_tick(http)(datetime.now(UTC))
    alert = await one_alert(http, "api-hot-1", "temp_high")
    assert alert["state"] == "open" and alert["severity"] == "major" and alert["ward"] == "tan-xuan"
    path = f"/api/ops/alerts/{alert['id']}"

    viewer = await token_for(http, Role.READ_ONLY)
    refused = await http.post(f"{path}/ack", headers={"Authorization": f"Bearer {viewer}"})
    assert refused.status_code == 403 and "alerts" in refused.json()["detail"]
    assert (await http.get(path, headers={"Authorization": f"Bearer {viewer}"})).status_code == 200

    acked = await http.post(f"{path}/ack")
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "admin-test"
    again = await http.post(f"{path}/ack")
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert (await http.post(f"{path}/silence", json={"until": past})).json()["detail"] == "until is in the past"
    naive = await http.post(f"{path}/silence", json={"until": "2030-01-01T00:00:00"})
    assert naive.status_code == 422
    too_long = (datetime.now(UTC) + timedelta(days=45)).isoformat()
    assert "at most 30 days" in (await http.post(f"{path}/silence", json={"until": too_long})).json()["detail"]
    until = datetime.now(UTC) + timedelta(hours=1)
    silenced = await http.post(f"{path}/silence", json={"until": until.isoformat()})
    assert silenced.status_code == 200 and silenced.json()["silenced_by"] == "admin-test"
    assert (await http.post(f"{path}/unsilence")).status_code == 200
    assert (await http.post(f"{path}/unsilence")).status_code == 409

    groups = (await http.get("/api/ops/alerts/groups", params={"by": "ward"})).json()
    wards = {g["key"]: g for g in groups["items"]}
    assert groups["total"] == 2 and wards["tan-xuan"]["live"] == 2 and wards["tan-xuan"]["acknowledged"] == 1
    assert wards["tan-xuan"]["worst"] == "major" and wards["tan-xuan"]["by_severity"] == {"major": 2}
    by_device = (await http.get("/api/ops/alerts/groups", params={"by": "device", "limit": 1})).json()
    assert by_device["total"] == 2 and len(by_device["items"]) == 1
    assert (await http.get("/api/ops/alerts/groups", params={"by": "rack"})).status_code == 422

    resolved = await http.post(f"{path}/resolve")
    assert resolved.status_code == 200 and resolved.json()["resolved_by"] == "admin-test"
    assert (await http.post(f"{path}/resolve")).status_code == 409
    late_ack = await http.post(f"{path}/ack")
    assert late_ack.status_code == 409 and "resolved" in late_ack.json()["detail"]
    assert (await http.post(f"{path}/silence", json={"until": until.isoformat()})).status_code == 409
    detail = (await http.get(path)).json()
    assert [e["action"] for e in detail["events"]] == ["raised", "acknowledged", "silenced", "unsilenced",
                                                       "resolved"]
    assert (await http.get("/api/ops/alerts/999999")).status_code == 404
    assert (await http.get("/api/ops/alerts", params={"kind": "bogus"})).status_code == 422
    live = (await http.get("/api/ops/alerts", params={"state": "live", "ward": "tan-xuan"})).json()
    assert {a["kind"] for a in live["items"]} == {"disk_high"}


async def test_rules_edited_and_refused(fleet: httpx.AsyncClient) -> None:
    http = fleet
    rules = (await http.get("/api/ops/rules", params={"limit": 500})).json()
    assert rules["total"] == len(BUILTINS) and all(r["builtin"] for r in rules["items"])
    offline = next(r for r in rules["items"] if r["kind"] == "offline")
    assert offline["params"] == {"for_s": 300}

    async def refused(body: dict[str, Any], code: int, says: str) -> None:
        answer = await http.post("/api/ops/rules", json=body)
        assert answer.status_code == code, answer.text
        assert says in json.dumps(answer.json()), answer.text

    await refused({"name": "x", "kind": "meltdown"}, 422, "unknown rule kind")
    await refused({"name": "x", "kind": "temp_high", "params": {"max_c": "hot"}}, 422, "max_c")
    await refused({"name": "x", "kind": "disk_high", "params": {"max_pct": 150}}, 422, "less than or equal to 100")
    await refused({"name": "x", "kind": "offline", "params": {"for_minutes": 5}}, 422, "for_minutes")
    await refused({"name": "x", "kind": "flapping", "params": {"changes": True}}, 422, "changes")
    await refused({"name": "x", "kind": "offline", "device_kind": "vax"}, 422, "device_kind")
    await refused({"name": "offline", "kind": "offline"}, 409, "exists")
    await refused({"name": "x", "kind": "stale", "channels": ["nowhere"]}, 422, "no notification channel named")
    await NotificationChannel.create(name="ops-mail", kind="email", target={"to": ["ops@example.org"]})

    made = await http.post("/api/ops/rules", json={"name": "hot cabinets", "kind": "temp_high", "role": "camera",
                                                    "ward": "tan-xuan", "severity": "critical",
                                                    "params": {"max_c": 70}, "channels": ["ops-mail"]})
    assert made.status_code == 201, made.text
    rule = made.json()
    assert rule["params"] == {"max_c": 70.0} and rule["builtin"] is False and rule["updated_by"] == "admin-test"
    path = f"/api/ops/rules/{rule['id']}"
    changed = await http.patch(path, json={"kind": "camera_fps_low"})
    assert changed.status_code == 200 and changed.json()["params"] == {"min_fps": 5.0}
    assert (await http.patch(path, json={"params": {"min_fps": -1}})).status_code == 422
    assert (await http.patch(path, json={})).status_code == 422
    assert (await http.patch(path, json={"enabled": None})).status_code == 422
    assert (await http.patch(path, json={"ward": None})).json()["ward"] is None

    builtin = f"/api/ops/rules/{offline['id']}"
    edited = await http.patch(builtin, json={"params": {"for_s": 600}, "severity": "critical"})
    assert edited.status_code == 200 and edited.json()["params"] == {"for_s": 600}
    assert (await http.patch(builtin, json={"kind": "stale"})).status_code == 409
    assert (await http.patch(builtin, json={"enabled": False})).json()["enabled"] is False
    deleted = await http.delete(builtin)
    assert deleted.status_code == 409 and "builtin" in deleted.json()["detail"]
    assert (await http.delete(path)).status_code == 204
    assert (await http.get(path)).status_code == 404

    technician = await token_for(http, Role.TECHNICIAN)
    answer = await http.post("/api/ops/rules", json={"name": "y", "kind": "stale"},
                             headers={"Authorization": f"Bearer {technician}"})
    assert answer.status_code == 403


async def test_an_alert_raised_and_cleared_by_what_a_device_publishes(fleet: httpx.AsyncClient,
                                                                       mosquitto: Mosquitto) -> None:
    """A Pi publishes its birth and a hot health over MQTT; the engine's tick raises temp_high and a
    lamp's open lamp_failure event raises lamp_failure; cooler health and the event's end clear them."""
    http = fleet
    tick = alert_tick(http)
    device_id = f"alert-pi-{uuid.uuid4().hex[:6]}"
    pi = ScriptedDevice(mosquitto.port, device_id, ses=1)
    try:
        pi.birth(roles=["light"], period_s=30)
        pi.health(temp_c=91.0, cpu_pct=20)
        pi.send("event", id="lamp-3", type="lamp_failure", phase="start", category="other", data={"ma": 0})

        async def stored(temp: float) -> bool:
            device = await Device.get_or_none(id=device_id)
            return device is not None and device.online and (device.last_health or {}).get("temp_c") == temp

        await async_wait_for(lambda: stored(91.0))
        await async_wait_for(lambda: EventRecord.filter(device_id=device_id, event_id="lamp-3").exists())
        await tick(datetime.now(UTC))
        hot = await one_alert(http, device_id, "temp_high")
        lamp = await one_alert(http, device_id, "lamp_failure")
        assert hot["state"] == "open" and hot["value"]["temp_c"] == 91.0 and lamp["state"] == "open"

        pi.health(temp_c=55.0, cpu_pct=20)
        pi.send("event", id="lamp-3", type="lamp_failure", phase="end", category="other", data={"ma": 310})
        await async_wait_for(lambda: stored(55.0))
        await async_wait_for(lambda: EventRecord.filter(device_id=device_id, event_id="lamp-3", phase="end").exists())
        await tick(datetime.now(UTC))
        for kind in ("temp_high", "lamp_failure"):
            cleared = await one_alert(http, device_id, kind)
            assert cleared["state"] == "resolved" and cleared["resolved_by"] is None
            events = (await http.get(f"/api/ops/alerts/{cleared['id']}")).json()["events"]
            assert [(e["action"], e["notify"]) for e in events] == [("raised", "pending"), ("resolved", "pending")]
    finally:
        pi.close()
