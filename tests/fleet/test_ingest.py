"""Ingest against a real Mosquitto and a real database (SQLite and PostgreSQL)."""

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from contract.examples import invalid_cases, payload_bytes, valid_examples
from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


async def _device(http: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/devices/{device_id}")
    return response.json() if response.status_code == 200 else {}


async def _stats(http: httpx.AsyncClient) -> dict[str, Any]:
    """The counters once the batch in hand is counted (its rows can be visible a moment before)."""
    async def settled() -> dict[str, Any] | None:
        stats: dict[str, Any] = (await http.get("/api/ingest/stats")).json()
        return stats if stats["accounted"] == stats["received"] else None

    return await async_wait_for(settled, what="the ingest counters")


async def _health(http: httpx.AsyncClient, device_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/devices/{device_id}/health")
    return response.json() if response.status_code == 200 else []  # 404 until its first message


async def test_birth_makes_a_device_online_and_death_offline(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    dev = ScriptedDevice(mosquitto.port, device_id, ses=7)
    dev.birth(fw="1.2.3")
    online = await async_wait_for(lambda: _device(fleet, device_id), what="device after birth")
    assert online["online"] is True and online["session"] == 7 and online["fw"] == "1.2.3"
    assert online["status"] == "discovered"  # heard from, never registered
    dev.death(reason="shutdown")

    async def offline() -> bool:
        return (await _device(fleet, device_id)).get("online") is False

    await async_wait_for(offline, what="offline after death")
    assert (await _device(fleet, device_id))["last_death_reason"] == "shutdown"
    dev.close()


async def test_will_after_connection_loss_marks_device_offline(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    dev = ScriptedDevice(mosquitto.port, device_id, ses=3)
    dev.birth()
    await async_wait_for(lambda: _device(fleet, device_id), what="birth")
    dev.kill()  # no DISCONNECT: the broker publishes the will

    async def offline() -> dict[str, Any] | None:
        device = await _device(fleet, device_id)
        return device if device.get("online") is False else None

    device = await async_wait_for(offline, what="will")
    assert device["last_death_reason"] == "lost"


async def test_a_late_will_from_an_old_session_never_marks_a_reconnected_device_offline(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    old = ScriptedDevice(mosquitto.port, device_id, ses=10)
    old.birth()
    await async_wait_for(lambda: _device(fleet, device_id), what="first birth")
    new = ScriptedDevice(mosquitto.port, device_id + "x", ses=11, will=False)  # stands in for the same device
    new.device_id = device_id
    new.birth()

    async def on_new_session() -> bool:
        return (await _device(fleet, device_id)).get("session") == 11

    await async_wait_for(on_new_session, what="second birth")
    old.kill()  # the old connection's will (ses=10) arrives after the new birth
    marker = new.health()  # then something we can wait for, sent after the will

    async def marker_stored() -> bool:
        return any(h["seq"] == marker for h in await _health(fleet, device_id))

    await async_wait_for(marker_stored, what="marker after the late will")
    device = await _device(fleet, device_id)
    assert device["online"] is True and device["session"] == 11
    new.close()


async def test_retained_birth_and_death_replayed_to_a_restarted_fleet_give_the_same_answer(
        database_url: str, mosquitto: Mosquitto, device_id: str) -> None:
    from tests.support.fleet import fleet_settings, running_fleet

    dev = ScriptedDevice(mosquitto.port, device_id, ses=4)
    dev.birth()
    dev.death(reason="shutdown")  # both retained, same session: the device is offline
    dev.close()
    for _ in range(2):  # a fresh fleet, then one that already has the device on record
        settings = fleet_settings(database_url, mosquitto.url)
        async with running_fleet(settings) as http:
            device = await async_wait_for(lambda: _device(http, device_id), what="retained birth")

            async def settled() -> dict[str, Any] | None:
                d = await _device(http, device_id)
                return d if d.get("last_death_reason") else None

            device = await async_wait_for(settled, what="retained death")
            assert device["online"] is False and device["session"] == 4


async def test_replayed_messages_are_stored_once(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1)
    dev.birth()
    for seq in range(5):
        dev.health(seq=seq)
    for seq in range(5):  # a store-and-forward replay of the same messages
        dev.health(seq=seq)
    dev.health(seq=5)

    async def all_in() -> bool:
        return any(h["seq"] == 5 for h in await _health(fleet, device_id))

    await async_wait_for(all_in, what="last message")
    stored = sorted(h["seq"] for h in await _health(fleet, device_id))
    assert stored == [0, 1, 2, 3, 4, 5]
    assert (await _stats(fleet))["duplicates"] == 5
    assert (await fleet.get(f"/api/devices/{device_id}/gaps")).json() == []


async def test_gaps_are_recorded_and_closed_by_late_arrivals(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    dev = ScriptedDevice(mosquitto.port, device_id, ses=2)
    dev.birth()
    for seq in (0, 1, 5, 9):
        dev.health(seq=seq)

    async def gaps() -> list[dict[str, Any]]:
        response = await fleet.get(f"/api/devices/{device_id}/gaps")
        return response.json() if response.status_code == 200 else []

    found = await async_wait_for(lambda: _gaps_len(gaps, 2), what="two gaps")
    assert [(g["first_seq"], g["last_seq"], g["open"]) for g in found] == [(2, 4, True), (6, 8, True)]
    for seq in (3, 2, 4, 7):  # fills the first gap, splits the second
        dev.health(seq=seq)

    async def settled() -> list[dict[str, Any]] | None:
        rows = await gaps()
        open_rows = sorted((g["first_seq"], g["last_seq"]) for g in rows if g["open"])
        return rows if open_rows == [(6, 6), (8, 8)] else None

    await async_wait_for(settled, what="gaps filled and split")
    device = await _device(fleet, device_id)
    assert device["open_gaps"] == 2
    stats = await _stats(fleet)
    assert stats["late"] == 4 and stats["duplicates"] == 0
    dev.close()


async def _gaps_len(fetch: Any, n: int) -> list[dict[str, Any]] | None:
    rows = await fetch()
    return rows if len(rows) == n else None


async def test_malformed_and_oversized_messages_are_rejected_counted_and_ingest_lives_on(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1, will=False)
    cases = invalid_cases()
    expected: dict[str, int] = {}
    skipped = 0
    for case in cases:
        topic = case["topic"].replace("pi-dx-0001", device_id)
        dev.client.publish(topic, payload_bytes(case), qos=1).wait_for_publish(10)
        if case.get("ingest") == "skipped: own_publish":  # the fleet's own kind of topic: not a device's
            skipped += 1
        else:
            expected[case["reason"]] = expected.get(case["reason"], 0) + 1
    dev.birth()
    dev.health(seq=0)  # a good message after all the bad ones

    async def stored() -> bool:
        return len(await _health(fleet, device_id)) == 1

    await async_wait_for(stored, what="the good message after the bad ones")
    stats = await _stats(fleet)
    assert stats["rejected"] == expected
    assert stats["rejected_total"] == len(cases) - skipped
    assert stats["skipped"] == {"own_publish": skipped}
    assert stats["received"] == len(cases) + 2 and stats["batch_errors"] == 0
    reasons = {r["reason"] for r in stats["recent_rejects"]}
    assert reasons == set(expected)
    assert all(r["detail"] for r in stats["recent_rejects"])
    assert (await fleet.get("/healthz")).status_code == 200
    dev.close()


async def test_every_example_message_is_accepted_and_stored(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto) -> None:
    examples = valid_examples()
    probe = ScriptedDevice(mosquitto.port, "probe-examples", ses=0, will=False)
    sent = 0
    for name, example in examples.items():
        if name.split(".")[0] in ("cmd", "state_desired"):
            continue  # downstream messages: devices read them, the fleet sends them
        probe.client.publish(example["topic"], json.dumps(example["payload"]), qos=1,
                             retain=example["retain"]).wait_for_publish(10)
        sent += 1

    async def all_in() -> dict[str, Any] | None:
        stats = await _stats(fleet)
        return stats if stats["accounted"] >= sent else None

    stats = await async_wait_for(all_in, what="examples taken in")
    assert stats["rejected_total"] == 0 and stats["duplicates"] == 0
    births_and_deaths = sum(1 for n in examples if n.split(".")[0] in ("birth", "death"))
    reserved = sum(1 for n in examples if n.split(".")[0].startswith("child_"))
    ota = sum(1 for n in examples if n.split(".")[0] == "ota_progress")
    assert stats["presence"] == births_and_deaths and stats["reserved"] == reserved and stats["ota"] == ota
    assert stats["stored"] == sent - births_and_deaths - reserved - ota
    events = (await fleet.get("/api/devices/pi-dx-0001/events")).json()
    assert events[0]["snapshot"]["ref"].endswith(".jpg") and events[0]["category"] == "traffic_safety"
    telemetry = (await fleet.get("/api/devices/pi-dx-0001/telemetry")).json()
    assert telemetry[0]["readings"]["pm25"] == 12.5
    # a sensor point sent after its time is filed at its at_ms (docs/fleet.md, "Telemetry time")
    (point,) = (await fleet.get("/api/devices/pi-dx-0002/telemetry")).json()
    sensor = examples["telemetry.sensor"]["payload"]
    assert datetime.fromisoformat(point["at"]) == datetime.fromtimestamp(sensor["at_ms"] / 1000, UTC)
    assert point["device_ts"] == sensor["ts"] and point["readings"] == sensor["r"]
    # the stream of pi-dx-0002 starts at its birth's next_seq (5): nothing before it is missing
    assert (await fleet.get("/api/devices/pi-dx-0002/gaps")).json() == []
    for device_id in ("pi-dx-0001", "pi-dx-0002", "esp-light-0007"):
        probe.device_id = device_id
        probe.clear_retained()
    probe.close()


async def test_a_device_that_lost_its_counter_is_not_mistaken_for_a_replay(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    before = ScriptedDevice(mosquitto.port, device_id, ses=50)
    before.birth()
    for seq in range(3):
        before.health(seq=seq, cpu_pct=1.0)
    before.close()
    wiped = ScriptedDevice(mosquitto.port, device_id, ses=1)  # storage wiped: counting from 1 again
    wiped.birth()
    for seq in range(3):
        wiped.health(seq=seq, cpu_pct=2.0)
    for seq in range(3):
        wiped.health(seq=seq, cpu_pct=2.0)  # and a replay of those: still duplicates

    async def all_stored() -> list[dict[str, Any]] | None:
        rows = await _health(fleet, device_id)
        return rows if len(rows) == 6 else None

    rows = await async_wait_for(all_stored, what="both devices' lives stored")
    assert sorted(r["data"]["cpu_pct"] for r in rows) == [1.0] * 3 + [2.0] * 3
    assert (await _stats(fleet))["duplicates"] == 3
    device = await _device(fleet, device_id)
    assert device["session"] == 1 and device["online"] is True
    wiped.close()
