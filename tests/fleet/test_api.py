"""The registry, data and control API, over real HTTP, on SQLite and PostgreSQL."""

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


async def test_registry_create_list_filter_get_update_decommission(fleet: httpx.AsyncClient) -> None:
    specs = [
        {"id": "light-tp-001", "kind": "esp32", "ward": "tan-phu", "tags": ["light", "pilot"]},
        {"id": "light-tp-002", "kind": "esp32", "ward": "tan-phu", "tags": ["light"]},
        {"id": "cam-tx-001", "kind": "pi", "ward": "tan-xuan", "site": "Phu Rieng junction", "tags": ["camera"],
         "latitude": 11.535, "longitude": 106.883},
    ]
    for spec in specs:
        response = await fleet.post("/api/devices", json=spec)
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "registered"
    assert [d["id"] for d in (await fleet.get("/api/devices")).json()] == ["cam-tx-001", "light-tp-001",
                                                                         "light-tp-002"]
    assert [d["id"] for d in (await fleet.get("/api/devices", params={"kind": "pi"})).json()] == ["cam-tx-001"]
    assert len((await fleet.get("/api/devices", params={"ward": "tan-phu"})).json()) == 2
    assert [d["id"] for d in (await fleet.get("/api/devices", params={"tag": "pilot"})).json()] == ["light-tp-001"]
    assert (await fleet.get("/api/devices", params={"status": "active"})).json() == []

    one = (await fleet.get("/api/devices/cam-tx-001")).json()
    assert one["site"] == "Phu Rieng junction" and one["online"] is False and one["latitude"] == 11.535

    patched = await fleet.patch("/api/devices/cam-tx-001", json={"name": "Camera 1", "tags": ["camera", "night"]})
    assert patched.status_code == 200 and patched.json()["name"] == "Camera 1"
    assert patched.json()["ward"] == "tan-xuan"  # untouched fields stay

    retired = await fleet.post("/api/devices/light-tp-002/decommission")
    assert retired.json()["status"] == "decommissioned"
    listed = (await fleet.get("/api/devices", params={"status": "decommissioned"})).json()
    assert [d["id"] for d in listed] == ["light-tp-002"]


async def test_bad_requests_get_a_4xx_that_says_what_is_wrong(fleet: httpx.AsyncClient) -> None:
    bad_id = await fleet.post("/api/devices", json={"id": "Bad ID!", "kind": "pi"})
    assert bad_id.status_code == 422 and "id" in bad_id.text
    bad_kind = await fleet.post("/api/devices", json={"id": "ok-id", "kind": "toaster"})
    assert bad_kind.status_code == 422 and "kind" in bad_kind.text
    unknown_field = await fleet.post("/api/devices", json={"id": "ok-id", "kind": "pi", "colour": "red"})
    assert unknown_field.status_code == 422 and "colour" in unknown_field.text
    assert (await fleet.post("/api/devices", json={"id": "dup-1", "kind": "pi"})).status_code == 201
    duplicate = await fleet.post("/api/devices", json={"id": "dup-1", "kind": "pi"})
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["detail"]
    missing = await fleet.get("/api/devices/nope-404")
    assert missing.status_code == 404 and "nope-404" in missing.json()["detail"]
    empty_patch = await fleet.patch("/api/devices/dup-1", json={})
    assert empty_patch.status_code == 422
    bad_range = await fleet.get("/api/devices/dup-1/telemetry",
                                params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"})
    assert bad_range.status_code == 422 and "since" in bad_range.json()["detail"]
    big = await fleet.post("/api/devices/dup-1/commands", json={"name": "ping", "args": {"x": "y" * 3000}})
    assert big.status_code == 422 and "limit" in big.json()["detail"]


async def test_a_registered_device_becomes_active_and_a_decommissioned_one_is_refused(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    await fleet.post("/api/devices", json={"id": device_id, "kind": "pi", "ward": "tan-binh"})
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1)
    dev.birth()

    async def active() -> bool:
        return (await fleet.get(f"/api/devices/{device_id}")).json()["status"] == "active"

    await async_wait_for(active, what="active after birth")
    await fleet.post(f"/api/devices/{device_id}/decommission")
    dev.health(seq=0)

    async def refused() -> dict[str, Any] | None:
        stats = (await fleet.get("/api/ingest/stats")).json()
        return stats if stats["rejected"].get("decommissioned") else None

    await async_wait_for(refused, what="refusal counted")
    assert (await fleet.get(f"/api/devices/{device_id}/health")).json() == []
    command = await fleet.post(f"/api/devices/{device_id}/commands", json={"name": "ping"})
    assert command.status_code == 409
    dev.close()


async def test_telemetry_by_device_and_time_range(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1)
    dev.birth()
    base = datetime(2026, 11, 1, tzinfo=UTC)
    for hour in range(6):
        ts = int((base + timedelta(hours=hour)).timestamp() * 1000)
        dev.telemetry(ts=ts, temp_c=25.0 + hour)
    dev.telemetry(ts=None, temp_c=99.0)  # clock unknown: filed under its arrival time

    async def all_in() -> list[dict[str, Any]] | None:
        response = await fleet.get(f"/api/devices/{device_id}/telemetry")
        rows = response.json() if response.status_code == 200 else []
        return rows if len(rows) == 7 else None

    rows = await async_wait_for(all_in, what="telemetry stored")
    assert [r["readings"]["temp_c"] for r in rows] == [25, 26, 27, 28, 29, 30, 99]
    window = await fleet.get(f"/api/devices/{device_id}/telemetry", params={
        "since": (base + timedelta(hours=2)).isoformat(), "until": (base + timedelta(hours=4)).isoformat()})
    assert [r["readings"]["temp_c"] for r in window.json()] == [27.0, 28.0]
    assert rows[-1]["device_ts"] is None
    dev.close()


async def test_commands_go_down_and_results_come_back(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1)
    dev.birth()
    await async_wait_for(lambda: _exists(fleet, device_id), what="device")
    sent = await fleet.post(f"/api/devices/{device_id}/commands",
                            json={"name": "set_health_period", "args": {"period_s": 10}, "ttl_s": 60})
    assert sent.status_code == 202, sent.text
    command = sent.json()
    assert command["status"] == "sent"
    received = await async_wait_for(lambda: _first(dev, "/cmd"), what="command at the device")
    assert received["id"] == command["id"] and received["args"] == {"period_s": 10}
    assert received["exp"] > time.time() * 1000
    dev.send("cmd/result", id=command["id"], status="ok", detail={"period_s": 10})

    async def answered() -> dict[str, Any] | None:
        row = (await fleet.get(f"/api/devices/{device_id}/commands/{command['id']}")).json()
        return row if row["status"] == "ok" else None

    row = await async_wait_for(answered, what="result")
    assert row["detail"] == {"period_s": 10} and row["answered_at"]
    dev.close()


async def test_desired_state_is_versioned_retained_and_reported(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    await fleet.post("/api/devices", json={"id": device_id, "kind": "esp32"})
    first = await fleet.put(f"/api/devices/{device_id}/desired", json={"doc": {"health_period_s": 60}})
    second = await fleet.put(f"/api/devices/{device_id}/desired", json={"doc": {"health_period_s": 30}})
    assert first.json()["version"] == 1 and second.json()["version"] == 2
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1)  # connects after: gets the retained document
    desired = await async_wait_for(lambda: _first(dev, "/state/desired"), what="retained desired state")
    assert desired == {"v": 1, "version": 2, "doc": {"health_period_s": 30}}
    dev.send("state/reported", version=2, status="applied")

    async def reported() -> dict[str, Any] | None:
        body = (await fleet.get(f"/api/devices/{device_id}/desired")).json()
        return body if body["reported_version"] == 2 else None

    body = await async_wait_for(reported, what="reported state")
    assert body["reported_status"] == "applied" and body["doc"] == {"health_period_s": 30}
    dev.raw("state/desired", b"", retain=True)
    dev.close()


async def _exists(http: httpx.AsyncClient, device_id: str) -> bool:
    return (await http.get(f"/api/devices/{device_id}")).status_code == 200


async def _first(dev: ScriptedDevice, suffix: str) -> dict[str, Any] | None:
    for topic, body in list(dev.received):
        if topic.endswith(suffix):
            return body
    return None




async def test_a_board_without_a_clock_gets_the_fleets_time(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    board = ScriptedDevice(mosquitto.port, device_id, ses=1)
    board.birth(kind="esp32", roles=["light"])  # ts null: no NTP reached yet
    command = await async_wait_for(lambda: _first(board, "/cmd"), what="set_time at the board")
    assert command["name"] == "set_time"
    assert abs(command["args"]["unix_ms"] - time.time() * 1000) < 60_000
    board.send("cmd/result", id=command["id"], status="ok", detail={"skew_ms": 0})

    async def answered() -> dict[str, Any] | None:
        row = (await fleet.get(f"/api/devices/{device_id}/commands/{command['id']}")).json()
        return row if row["status"] == "ok" else None

    await async_wait_for(answered, what="set_time answered")
    clocked = ScriptedDevice(mosquitto.port, device_id + "-2", ses=1)
    clocked.birth(kind="esp32", ts=int(time.time() * 1000))  # a board that knows the time
    clocked.health(seq=0)

    async def marker() -> bool:
        response = await fleet.get(f"/api/devices/{device_id}-2/health")
        return response.status_code == 200 and len(response.json()) == 1

    await async_wait_for(marker, what="the clocked board's health")
    # a ping sent now travels the same connection after any set_time would have: if the first
    # command the clocked board sees is the ping, no set_time was sent to it
    ping = (await fleet.post(f"/api/devices/{device_id}-2/commands", json={"name": "ping"})).json()
    first = await async_wait_for(lambda: _first(clocked, "/cmd"), what="the ping")
    assert first["id"] == ping["id"]
    board.close()
    clocked.close()
