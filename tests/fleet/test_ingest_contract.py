"""Where the fleet and docs/protocol.md disagreed (issue 8, finding 16), through a real broker.

Each test plays what a device written from the contract alone did, and checks the fleet now
does what the contract says.
"""

from typing import Any

import httpx

from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


async def _json(http: httpx.AsyncClient, path: str) -> Any:
    response = await http.get(path)
    return response.json() if response.status_code == 200 else None


async def _device(http: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    return await _json(http, f"/api/devices/{device_id}") or {}


async def _stats(http: httpx.AsyncClient) -> dict[str, Any]:
    """The counters once the batch in hand is counted (its rows can be visible a moment before)."""
    async def settled() -> dict[str, Any] | None:
        stats: dict[str, Any] = (await http.get("/api/ingest/stats")).json()
        return stats if stats["accounted"] == stats["received"] else None

    return await async_wait_for(settled, what="the ingest counters")


async def _seen(http: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    async def there() -> dict[str, Any]:
        return await _device(http, device_id)

    return await async_wait_for(there, what=f"device {device_id}")


async def _health_seqs(http: httpx.AsyncClient, device_id: str) -> list[int]:
    rows = await _json(http, f"/api/devices/{device_id}/health") or []
    return sorted(r["seq"] for r in rows)


async def test_a_stream_that_starts_at_its_next_seq_has_no_gap_below_it(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    announced = ScriptedDevice(mosquitto.port, device_id, ses=3, will=False)
    announced.birth(next_seq=5)
    for seq in (5, 6):
        announced.health(seq=seq)
    silent = ScriptedDevice(mosquitto.port, device_id + "b", ses=3, will=False)
    silent.birth()  # no next_seq: the stream starts at 0
    silent.health(seq=5)

    async def both_in() -> bool:
        return await _health_seqs(fleet, device_id) == [5, 6] and await _health_seqs(fleet, device_id + "b") == [5]

    await async_wait_for(both_in, what="both streams stored")
    assert await _json(fleet, f"/api/devices/{device_id}/gaps") == []
    gaps = await _json(fleet, f"/api/devices/{device_id}b/gaps")
    assert [(g["first_seq"], g["last_seq"]) for g in gaps] == [(0, 4)]
    announced.close()
    silent.close()


async def test_dotted_role_commands_reach_the_device_through_the_api(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """The API refused `speaker.clip_fetch` with 422: an ESP32 speaker could never get a clip."""
    speaker = ScriptedDevice(mosquitto.port, device_id, ses=1)
    speaker.birth(kind="esp32", roles=["speaker", "light"], ts=1795766400000)  # has a clock: no set_time
    await _seen(fleet, device_id)
    clip = {"name": "a.wav", "url": "https://fleet.example/clips/a.wav", "sha256": "0" * 64, "bytes": 10}
    for name, args in (("speaker.clip_fetch", clip), ("light.override", {"level": 40, "until": 1}), ("ping", {})):
        response = await fleet.post(f"/api/devices/{device_id}/commands", json={"name": name, "args": args})
        assert response.status_code == 202, response.text
    for name in ("Speaker.clip", "speaker.clip.fetch", "speaker-clip", "x" * 40):
        response = await fleet.post(f"/api/devices/{device_id}/commands", json={"name": name, "args": {}})
        assert response.status_code == 422, name

    async def all_three() -> list[str] | None:
        names = [body["name"] for topic, body in list(speaker.received) if topic.endswith("/cmd")]
        return names if len(names) >= 3 else None

    assert await async_wait_for(all_three, what="the commands at the device") == [
        "speaker.clip_fetch", "light.override", "ping"]
    speaker.close()


async def test_a_command_result_with_a_text_detail_is_stored_as_text(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """The contract allows `detail` as text; the fleet refused it (`store_error`)."""
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1)
    dev.birth()
    await _seen(fleet, device_id)
    answers = {"clip download failed: sha256 mismatch": None, "12": None, "[1, 2]": None}
    for text in answers:
        sent = await fleet.post(f"/api/devices/{device_id}/commands", json={"name": "ping", "args": {}})
        answers[text] = sent.json()["id"]
        dev.send("cmd/result", id=sent.json()["id"], status="error", detail=text)

    async def answered() -> list[Any] | None:
        details = []
        for command_id in answers.values():
            command = await _json(fleet, f"/api/devices/{device_id}/commands/{command_id}")
            if command["status"] != "error":
                return None
            details.append(command["detail"])
        return details

    assert await async_wait_for(answered, what="the results") == list(answers)  # text stays text
    assert (await _stats(fleet))["rejected_total"] == 0
    dev.close()


async def test_ota_progress_and_child_messages_are_accepted_and_numbered_in_the_stream(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """Listed as upstream, refused as `bad_topic`: and a refused numbered message looks like a gap."""
    pi = ScriptedDevice(mosquitto.port, device_id, ses=2, will=False)
    pi.birth()
    pi.send("ota/progress", seq=0, release="0.2.0", status="downloading", pct=40)
    pi.send("child/cam-0042/birth", seq=1, kind="ip_camera")
    pi.send("child/cam-0042/health", seq=2, fps=12.5)
    pi.send("child/cam-0042/death", seq=3, reason="lost")
    pi.send("child/cam-0042/health", seq=2, fps=12.5)  # a replay: a duplicate like any other
    pi.health(seq=4)

    async def last_in() -> bool:
        return await _health_seqs(fleet, device_id) == [4]

    await async_wait_for(last_in, what="the health after them")
    stats = await _stats(fleet)
    assert stats["rejected_total"] == 0
    # ota/progress is applied to rollouts and counted as `ota`; child messages are still reserved
    assert stats["ota"] == 1 and stats["reserved"] == 3
    assert stats["duplicates"] == 1 and stats["stored"] == 1
    assert await _json(fleet, f"/api/devices/{device_id}/gaps") == []
    pi.close()


async def test_the_fleets_own_commands_and_desired_state_are_not_counted_as_rejects(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """The fleet subscribes to ioc/v1/d/+/# and sees what it publishes; those were `bad_topic`."""
    dev = ScriptedDevice(mosquitto.port, device_id, ses=1)
    dev.birth()
    await _seen(fleet, device_id)
    assert (await fleet.post(f"/api/devices/{device_id}/commands", json={"name": "ping"})).status_code == 202
    assert (await fleet.put(f"/api/devices/{device_id}/desired", json={"doc": {"a": 1}})).status_code == 200

    async def both_seen() -> dict[str, Any] | None:
        stats = await _stats(fleet)
        return stats if stats["skipped"].get("own_publish", 0) >= 2 else None

    stats = await async_wait_for(both_seen, what="the fleet's own publishes come back")
    assert stats["rejected_total"] == 0 and stats["skipped"]["own_publish"] == 2
    dev.close()


async def test_a_death_from_a_newer_session_ends_the_device_and_that_sessions_late_birth_does_not_revive_it(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, device_id: str) -> None:
    """The rule as decided in docs/protocol.md, "Presence" (the code did this; the doc said otherwise)."""
    dev = ScriptedDevice(mosquitto.port, device_id, ses=10, will=False)
    dev.birth()
    await _seen(fleet, device_id)
    dev.death(ses=11, reason="lost")  # connection 11 died before its birth got through
    dev.ses = 11
    dev.birth()  # ... which a second fleet instance, or a retained replay, applies after the death
    # a marker to wait for, in the ended session 11: a message of a session no death has ended
    # would bring the device online (docs/fleet.md, "Liveness")
    dev.health(seq=0)

    async def marker() -> bool:
        return await _health_seqs(fleet, device_id) == [0]

    await async_wait_for(marker, what="the marker")
    device = await _device(fleet, device_id)
    assert device["online"] is False and device["session"] == 11
    dev.ses = 12
    dev.birth()  # a new connection
    await async_wait_for(lambda: _online(fleet, device_id), what="online again")
    assert (await _device(fleet, device_id))["session"] == 12
    dev.close()


async def _online(http: httpx.AsyncClient, device_id: str) -> bool:
    return bool((await _device(http, device_id)).get("online"))
