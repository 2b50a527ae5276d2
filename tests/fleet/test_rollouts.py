"""Rollouts end to end: the real fleet, real Mosquitto, simulated updaters answering offers
(tests/support/ota_updaters.py). Phases advance; bad releases pause the rollout with the reason;
a phase rolls back when asked."""

from collections.abc import Iterable

import httpx

from fleet.ota.gate import phase_sizes
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
    wait_online,
    wait_status,
)
from tests.support.mosquitto import Mosquitto
from tests.support.ota_updaters import Behaviour, herd
from tests.support.wait import async_wait_for

__all__ = ["rollout_fleet", "signer"]  # fixtures


async def test_phases_advance_in_a_stable_order_until_every_device_confirmed(
        rollout_fleet: httpx.AsyncClient, mosquitto: Mosquitto, signer: SigningKey) -> None:
    http = rollout_fleet
    release = await publish_release(http, signer, "0.2.0")
    devices = lights("ro-ok", 20)
    await register(http, devices)
    async with herd(mosquitto.port, devices):
        await wait_online(http, devices)
        made = await http.post("/api/rollouts", json={"release": release, "phases": [10, 50, 100], "soak_s": 0.5,
                                                      "offers_per_min": 10_000})
        assert made.status_code == 201, made.text
        body = made.json()
        assert body["total"] == 20 and body["sizes"] == phase_sizes(20, [10, 50, 100]) == [2, 10, 20]
        done = await wait_status(http, body["id"], "done")
        assert done["counts"]["confirmed"] == 20 and done["phase"] == 2
        rows = await device_rows(http, body["id"])
        assert {d.device_id for d in devices} == rows.keys()
        # phase k holds phase k-1 (ranks), and every device of a phase was offered before any of the next
        by_rank = sorted(rows.values(), key=lambda r: r["rank"])
        assert [r["phase"] for r in by_rank] == [0] * 2 + [1] * 8 + [2] * 10
        offered = sorted(rows.values(), key=lambda r: r["offered_at"])
        assert [r["phase"] for r in offered] == sorted(r["phase"] for r in offered)
        assert all(r["state"] == "confirmed" and r["boots_before"] == 1 for r in rows.values())
        assert all(d.fw == "0.2.0" and len(d.offers) == 1 for d in devices)
        offer = devices[0].offers[0]
        assert offer["release"] == release and offer["action"] == "install" and offer["id"].startswith("r")
        assert offer["url"].startswith("http://fleet.example:8000/ota/files/{sha256}?t=")
        # a finished device's retained offer is cleared
        await async_wait_for(lambda: _all(d.cleared >= 1 for d in devices), what="offers cleared")
        # the same target gives the same order: a second rollout of the release ranks alike
    again = await http.post("/api/rollouts", json={"release": release, "phases": [10, 50, 100]})
    assert again.status_code == 201
    assert {k: v["rank"] for k, v in (await device_rows(http, again.json()["id"])).items()} == \
        {k: v["rank"] for k, v in rows.items()}
    await http.post(f"/api/rollouts/{again.json()['id']}/abort")
    audit = [e for e in (await http.get("/api/audit")).json() if e["action"].startswith("rollout.")]
    assert {"rollout.create", "rollout.phase", "rollout.done", "rollout.abort"} <= {e["action"] for e in audit}


async def _all(values: Iterable[bool]) -> bool:
    return all(values)


async def test_a_crash_looping_release_pauses_the_rollout_and_its_phase_rolls_back_on_command(
        rollout_fleet: httpx.AsyncClient, mosquitto: Mosquitto, signer: SigningKey) -> None:
    http = rollout_fleet
    release = await publish_release(http, signer, "0.3.0")
    devices = lights("ro-crash", 20)
    await register(http, devices)
    async with herd(mosquitto.port, devices) as flock:
        await wait_online(http, devices)
        made = await http.post("/api/rollouts", json={"release": release, "phases": [25, 100], "soak_s": 60,
                                                      "max_failure_pct": 20, "offers_per_min": 10_000})
        rollout_id = made.json()["id"]
        rows = await device_rows(http, rollout_id)
        first = sorted((r for r in rows.values() if r["phase"] == 0), key=lambda r: r["rank"])
        assert len(first) == 5
        crashing = [r["device_id"] for r in first[:2]]  # their trial crashes: the old slot reports rolled_back
        for device_id in crashing:
            flock.per_device[(device_id, release)] = Behaviour(outcome="rolled_back", reason="crash", boots=4)
        flock.behaviours[release] = Behaviour(boots=4)  # the others crash-looped too, then held
        paused = await wait_status(http, rollout_id, "paused")
        reason = paused["pause_reason"]
        assert reason["figure"] == "failure_rate" and reason["by"] == "rollout-engine"
        assert set(reason["devices"]) <= set(crashing) and reason["pct"] > 20 and reason["phase"] == 0
        # nothing beyond the first phase was offered
        assert all(not d.offers for d in devices if rows[d.device_id]["phase"] > 0)
        await async_wait_for(lambda: _counts_settled(http, rollout_id, 5), what="the first phase settled")
        states = await device_rows(http, rollout_id)
        assert {d for d, r in states.items() if r["state"] == "rolled_back"} == set(crashing)
        assert all(states[d]["reason"].startswith("crash") for d in crashing)
        confirmed = [d for d, r in states.items() if r["state"] == "confirmed"]
        assert len(confirmed) == 3

        back = await http.post(f"/api/rollouts/{rollout_id}/rollback", json={"phase": 0})
        assert back.status_code == 200, back.text
        assert back.json()["rollback_offers"] == 3 and back.json()["status"] == "paused"

        async def rolled_back() -> bool:
            now = await device_rows(http, rollout_id)
            return all(now[d]["state"] == "rolled_back" and now[d]["action"] == "rollback" for d in confirmed)

        await async_wait_for(rolled_back, what="the phase rolled back")
        final = await device_rows(http, rollout_id)
        assert all(final[d]["reason"] == "command: rolled back" for d in confirmed)
        by_id = {d.device_id: d for d in devices}
        assert all(by_id[d].fw == "0.1.0" and by_id[d].offers[-1]["action"] == "rollback" for d in confirmed)
        assert all("meta" not in by_id[d].offers[-1] and "url" not in by_id[d].offers[-1] for d in confirmed)
        again = await http.post(f"/api/rollouts/{rollout_id}/rollback", json={"phase": 0})
        assert again.status_code == 409 and "nothing to roll back" in again.json()["detail"]
        assert engine(http).offers_sent == 8  # 5 installs, 3 rollbacks


async def _counts_settled(http: httpx.AsyncClient, rollout_id: int, n: int) -> bool:
    counts = (await rollout(http, rollout_id))["counts"]
    return bool(counts["confirmed"] + counts["rolled_back"] + counts["failed"] >= n)


async def test_a_release_that_doubles_the_loop_time_pauses_naming_loop_ms_and_the_devices(
        rollout_fleet: httpx.AsyncClient, mosquitto: Mosquitto, signer: SigningKey) -> None:
    http = rollout_fleet
    release = await publish_release(http, signer, "0.4.0")
    devices = lights("ro-slow", 8)
    await register(http, devices)
    async with herd(mosquitto.port, devices, health_s=0.1) as flock:
        flock.behaviours[release] = Behaviour(loop_factor=2.0)
        await wait_online(http, devices, health=10)
        made = await http.post("/api/rollouts", json={"release": release, "phases": [50, 100], "soak_s": 1,
                                                      "tolerance_pct": 25, "offers_per_min": 10_000})
        rollout_id = made.json()["id"]
        paused = await wait_status(http, rollout_id, "paused")
        reason = paused["pause_reason"]
        rows = await device_rows(http, rollout_id)
        first = {d for d, r in rows.items() if r["phase"] == 0}
        assert reason["figure"] == "loop_ms" and set(reason["devices"]) == first and reason["count"] == 4
        assert all(reason["before"][d] == 20 and reason["after"][d] == 40 for d in first)
        assert reason["tolerance_pct"] == 25 and paused["phase"] == 0
        assert all(rows[d]["before"]["loop_ms"] == 20 and rows[d]["after"]["loop_ms"] == 40 for d in first)
        assert all(not d.offers for d in devices if d.device_id not in first)


async def test_a_release_that_held_after_a_crash_loop_pauses_on_the_boot_count(
        rollout_fleet: httpx.AsyncClient, mosquitto: Mosquitto, signer: SigningKey) -> None:
    http = rollout_fleet
    release = await publish_release(http, signer, "0.5.0")
    devices = lights("ro-boots", 4)
    await register(http, devices)
    async with herd(mosquitto.port, devices) as flock:
        flock.behaviours[release] = Behaviour(boots=3)
        flock.per_device[(devices[0].device_id, release)] = Behaviour(boots=1)
        await wait_online(http, devices)
        made = await http.post("/api/rollouts", json={"release": release, "phases": [100], "soak_s": 0.5,
                                                      "max_boots": 2, "offers_per_min": 10_000})
        paused = await wait_status(http, made.json()["id"], "paused")
        reason = paused["pause_reason"]
        assert reason["figure"] == "boots" and reason["max_boots"] == 2
        assert set(reason["devices"]) == {d.device_id for d in devices[1:]}
        assert all(reason["before"][d] == 1 and reason["after"][d] == 4 for d in reason["devices"])
