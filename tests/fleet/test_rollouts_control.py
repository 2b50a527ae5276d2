"""Rollouts under control: maintenance windows, the offer rate, pause/resume/abort, who may act,
and the 4xx a person gets for a rollout that cannot be made. SQLite only (the engine's SQL runs on
PostgreSQL in tests/fleet/test_rollouts.py)."""

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from fleet.auth.roles import Role
from tests.fleet.release_kit import SigningKey
from tests.fleet.rollout_kit import (
    device_rows,
    engine,
    lights,
    publish_release,
    register,
    rollout,
    rollout_fleet,
    signer,
    ticks,
    wait_online,
    wait_status,
)
from tests.support.fleet import token_for
from tests.support.mosquitto import Mosquitto
from tests.support.ota_updaters import SimDevice, herd
from tests.support.wait import async_wait_for

__all__ = ["rollout_fleet", "signer"]  # fixtures


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'fleet.sqlite3'}"


async def _states(http: httpx.AsyncClient, rollout_id: int) -> dict[str, str]:
    return {d: r["state"] for d, r in (await device_rows(http, rollout_id)).items()}


def _ids(devices: Iterable[SimDevice]) -> set[str]:
    return {d.device_id for d in devices}


async def test_windows_keep_offers_to_their_hours(
        rollout_fleet: httpx.AsyncClient, mosquitto: Mosquitto, signer: SigningKey) -> None:
    http = rollout_fleet
    release = await publish_release(http, signer, "0.2.0")
    street = lights("win-light", 3)
    sensors = lights("win-sensor", 3, roles=["sensor"])
    await register(http, street + sensors)
    now = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh"))
    around_now = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"
    async with herd(mosquitto.port, street + sensors) as flock:
        await wait_online(http, street + sensors)
        made = await http.post("/api/rollouts", json={
            "release": release, "phases": [100], "soak_s": 60, "offers_per_min": 10_000,
            "windows": {"light": f"not {around_now}", "sensor": around_now}})
        assert made.status_code == 201, made.text
        rollout_id = made.json()["id"]
        rows = await device_rows(http, rollout_id)
        assert {rows[d]["window"] for d in _ids(sensors)} == {"sensor"}
        assert {rows[d]["window"] for d in _ids(street)} == {"light"}

        async def sensors_done() -> bool:
            states = await _states(http, rollout_id)
            return all(states[d] == "confirmed" for d in _ids(sensors))

        await async_wait_for(sensors_done, what="the sensors updated")
        await ticks(http, 5)
        states = await _states(http, rollout_id)
        assert all(states[d] == "pending" for d in _ids(street)) and not any(d.offers for d in street)
        assert flock.offers_seen == 3 and (await rollout(http, rollout_id))["status"] == "running"
        await http.post(f"/api/rollouts/{rollout_id}/abort")
    # a window that spans midnight and one that is never open for the lights, in another time zone
    late = await http.post("/api/rollouts", json={"release": release, "target": {"roles": ["light"]},
                                                  "windows": {"light": "22:00-05:00"}, "timezone": "UTC"})
    assert late.status_code == 201 and late.json()["windows"] == {"light": "22:00-05:00"}
    await http.post(f"/api/rollouts/{late.json()['id']}/abort")


async def test_offers_keep_to_offers_per_min(
        rollout_fleet: httpx.AsyncClient, mosquitto: Mosquitto, signer: SigningKey) -> None:
    http = rollout_fleet
    release = await publish_release(http, signer, "0.2.0")
    devices = lights("rate", 8)
    await register(http, devices)
    async with herd(mosquitto.port, devices) as flock:
        await wait_online(http, devices)
        made = await http.post("/api/rollouts", json={"release": release, "phases": [100], "offers_per_min": 3})
        rollout_id = made.json()["id"]

        async def three() -> bool:
            return list((await _states(http, rollout_id)).values()).count("confirmed") == 3

        await async_wait_for(three, what="three devices updated")
        await ticks(http, 10)
        counts = (await rollout(http, rollout_id))["counts"]
        assert counts["confirmed"] == 3 and counts["pending"] == 5
        assert flock.offers_seen == 3 and engine(http).offers_sent == 3
        await http.post(f"/api/rollouts/{rollout_id}/abort")


async def test_pause_resume_abort_and_who_may(
        rollout_fleet: httpx.AsyncClient, mosquitto: Mosquitto, signer: SigningKey) -> None:
    http = rollout_fleet
    release = await publish_release(http, signer, "0.2.0")
    second = await publish_release(http, signer, "0.3.0")
    devices = lights("ctl", 6)
    await register(http, devices)
    ops = {"Authorization": f"Bearer {await token_for(http, Role.OPS)}"}
    viewer = {"Authorization": f"Bearer {await token_for(http, Role.READ_ONLY)}"}
    operator = {"Authorization": f"Bearer {await token_for(http, Role.IOC_OPERATOR)}"}
    async with herd(mosquitto.port, devices) as flock:
        await wait_online(http, devices)
        body = {"release": release, "phases": [50, 100], "soak_s": 0, "offers_per_min": 10_000}
        for headers in (viewer, operator):
            refused = await http.post("/api/rollouts", json=body, headers=headers)
            assert refused.status_code == 403 and "rollouts" in refused.json()["detail"]
        assert (await http.get("/api/rollouts")).json() == []
        flock.go.clear()  # the devices take the offers and hold their answers
        made = await http.post("/api/rollouts", json=body, headers=ops)
        assert made.status_code == 201, made.text
        rollout_id = made.json()["id"]
        assert made.json()["created_by"].startswith("ops-")
        await async_wait_for(lambda: _at_least(flock.offers_seen, 3), what="the first phase offered")
        assert (await http.post(f"/api/rollouts/{rollout_id}/pause", headers=viewer)).status_code == 403
        paused = await http.post(f"/api/rollouts/{rollout_id}/pause", headers=ops)
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        assert paused.json()["pause_reason"]["figure"] == "command"
        assert (await http.post(f"/api/rollouts/{rollout_id}/pause", headers=ops)).status_code == 409
        flock.go.set()  # the first phase finishes while paused: the next phase waits
        await async_wait_for(lambda: _count(http, rollout_id, "confirmed", 3), what="the first phase confirmed")
        await ticks(http, 5)
        assert flock.offers_seen == 3 and (await rollout(http, rollout_id))["phase"] == 0
        listed = (await http.get("/api/rollouts", headers=viewer)).json()
        assert [r["id"] for r in listed] == [rollout_id] and listed[0]["counts"]["pending"] == 3
        resumed = await http.post(f"/api/rollouts/{rollout_id}/resume", headers=ops)
        assert resumed.status_code == 200 and resumed.json()["pause_reason"] is None
        done = await wait_status(http, rollout_id, "done")
        assert done["counts"]["confirmed"] == 6 and flock.offers_seen == 6
        assert (await http.post(f"/api/rollouts/{rollout_id}/abort", headers=ops)).status_code == 409

        # abort clears the offers that stand
        flock.go.clear()
        cleared_before = sum(d.cleared for d in devices)
        other = await http.post("/api/rollouts", json={**body, "release": second, "phases": [100]}, headers=ops)
        other_id = other.json()["id"]
        await async_wait_for(lambda: _at_least(flock.offers_seen, 12), what="the second rollout offered")
        aborted = await http.post(f"/api/rollouts/{other_id}/abort", headers=ops)
        assert aborted.status_code == 200 and aborted.json()["status"] == "aborted"
        await async_wait_for(lambda: _at_least(sum(d.cleared for d in devices) - cleared_before, 6),
                             what="the offers cleared")
        assert (await http.post(f"/api/rollouts/{other_id}/resume", headers=ops)).status_code == 409
        flock.go.set()
    audit = (await http.get("/api/audit")).json()
    actions = [(e["action"], e["actor"]) for e in audit if e["action"].startswith("rollout.")
               and e["actor"].startswith("ops-")]
    assert {a for a, _ in actions} >= {"rollout.create", "rollout.pause", "rollout.resume", "rollout.abort"}
    assert (await http.get(f"/api/rollouts/{rollout_id}/devices", headers=viewer,
                           params={"state": "confirmed", "limit": 2})).headers["X-Total-Count"] == "6"


async def _at_least(value: int, n: int) -> bool:
    return value >= n


async def _count(http: httpx.AsyncClient, rollout_id: int, state: str, n: int) -> bool:
    return bool((await rollout(http, rollout_id))["counts"][state] >= n)


async def test_a_rollout_that_cannot_be_made_is_refused_with_the_reason(
        rollout_fleet: httpx.AsyncClient, signer: SigningKey) -> None:
    http = rollout_fleet
    release = await publish_release(http, signer, "0.2.0")
    await register(http, lights("refuse", 2))
    cases = [
        ({"release": "esp32-9.9.9"}, 404, "no release named"),
        ({"release": release, "target": {"wards": ["nowhere"]}}, 422, "matches no device"),
        ({"release": release, "target": {"kind": "pi"}}, 422, "not the release's kind"),
        ({"release": release, "phases": [50, 10, 100]}, 422, "cumulative"),
        ({"release": release, "phases": [10, 50]}, 422, "the last phase is 100"),
        ({"release": release, "phases": [0, 100]}, 422, "above 0"),
        ({"release": release, "windows": {"light": "8-17"}}, 422, "HH:MM-HH:MM"),
        ({"release": release, "windows": {"light": "08:00-25:00"}}, 422, "HH:MM-HH:MM"),
        ({"release": release, "windows": {"light": "08:00-08:00"}}, 422, "empty"),
        ({"release": release, "windows": {"Light!": "08:00-17:00"}}, 422, "device class"),
        ({"release": release, "timezone": "Mars/Olympus_Mons"}, 422, "no time zone"),
    ]
    for body, status, words in cases:
        response = await http.post("/api/rollouts", json=body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"], (body, response.text)
    assert (await http.get("/api/rollouts")).json() == []
    assert (await http.get("/api/rollouts/999")).status_code == 404
    # an offset past what the database takes is the caller's error (SQLite: past 2^63, a 500 before)
    for path in ("/api/rollouts", "/api/rollouts/1/devices", "/api/releases", "/api/devices"):
        assert (await http.get(path, params={"offset": 2**63})).status_code == 422, path
    made = await http.post("/api/rollouts", json={"release": release, "soak_s": 3600})
    assert made.status_code == 201
    early = await http.post(f"/api/rollouts/{made.json()['id']}/rollback", json={"phase": 2})
    assert early.status_code == 422 and "has not started" in early.json()["detail"]
