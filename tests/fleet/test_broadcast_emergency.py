"""The emergency button on a real fleet and broker (SQLite and PostgreSQL), MQTT clients standing in
for the speaker nodes: an online speaker holding the clip gets `speaker.broadcast` at once and acks;
one without the clip fetches it (a real HTTP download) and then gets the command; an offline one
falls back to its desired state at once; one that does not answer falls back after the command's
expiry (the tick is given the time: no sleeping); cancel sends `speaker.stop` to the Pi that acked;
refusals (no confirm, no speaker, no such clip, a bad duration, the ops role) store nothing."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from fleet.auth.roles import Role
from fleet.broadcast import emergency as emergency_part
from fleet.broadcast.emergency import Emergencies, _registered
from fleet.broadcast.models import (
    Broadcast,
    BroadcastReceipt,
    EmergencyDispatch,
    ReceiptState,
    SpeakerClip,
    SpeakerDelivery,
)
from fleet.models import AuditEntry, Command, Device
from fleet.runtime import Runtime
from tests.fleet.audio_kit import audio_fleet
from tests.fleet.speaker_sim import DOWNLOAD, Node, speakers
from tests.support.fleet import token_for
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

WARD = "Phường 7"


def part(http: httpx.AsyncClient) -> Emergencies:
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.broadcasts is not None
    return _registered[runtime.broadcasts]


def delivering(http: httpx.AsyncClient) -> bool:
    """Whether delivery (desired-state documents) runs on this fleet's worker."""
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.broadcasts is not None
    return any(name == "delivery" for name, _ in runtime.broadcasts.parts)


async def dispatch_in(broadcast_id: int, device_id: str, state: str) -> EmergencyDispatch:
    async def reached() -> EmergencyDispatch | None:
        row = await EmergencyDispatch.get(broadcast_id=broadcast_id, device_id=device_id)
        return row if row.state == state else None

    found = await async_wait_for(reached, timeout=30, what=f"{device_id}'s dispatch {state}")
    assert found is not None
    return found


async def schedule_of(device_id: str) -> list[dict[str, Any]]:
    device = await Device.get(id=device_id)
    doc = device.desired_doc or {}
    return list((doc.get("speaker") or {}).get("schedule") or [])


async def in_desired_state(device_id: str, entry: str) -> None:
    async def carried() -> bool:
        return any(e.get("id") == entry for e in await schedule_of(device_id))

    await async_wait_for(carried, timeout=30, what=f"{entry} in {device_id}'s desired state")


async def test_emergency_dispatch(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with audio_fleet(tmp_path, mosquitto, database_url) as http:
        hold, need, mute = Node("spk-hold", "esp32"), Node("spk-need", "pi"), Node("spk-mute", "esp32")
        for device_id, kind in (("spk-hold", "esp32"), ("spk-need", "pi"), ("spk-mute", "esp32"), ("spk-off", "pi"),
                                ("light-7", "esp32")):
            made = await http.post("/api/devices", json={"id": device_id, "kind": kind, "ward": WARD})
            assert made.status_code == 201, made.text
        # spk-off ran the speaker role once and is offline now (its roles as its last birth set them)
        await Device.filter(id="spk-off").update(roles=["speaker"])
        await Device.filter(id="light-7").update(roles=["light"])
        made = await http.post("/api/audio/tts", json={"title": "cháy", "text": "Cháy ở chợ, tránh xa khu vực"},
                               timeout=60)
        assert made.status_code == 201, made.text
        clip = made.json()
        files = {f["kind"]: f for f in clip["files"]}
        esp_name = "c" + files["esp32"]["sha256"][:24]
        for device_id in ("spk-hold", "spk-mute"):  # fetched earlier
            await SpeakerClip.create(device_id=device_id, name=esp_name, sha256=files["esp32"]["sha256"],
                                     bytes=files["esp32"]["bytes"], state="ready")

        def policy(device_id: str, name: str, args: dict[str, Any]) -> tuple[str, Any] | None:
            if name == "speaker.clip_fetch":
                return DOWNLOAD
            if device_id == "spk-mute":
                return None  # its link is bad: the command never answers
            return ("ok", {"id": args.get("id"), "queued": 0})

        async with speakers(mosquitto.port, [hold, need, mute], policy) as nodes:
            before = datetime.now(UTC).replace(microsecond=0)
            started = await http.post("/api/broadcasts/emergency", json={
                "title": "Cháy chợ", "clip_id": clip["id"], "targets": {"wards": [WARD]}, "confirm": True})
            assert started.status_code == 201, started.text
            body = started.json()
            b = body["broadcast"]
            assert (b["level"], b["version"], b["rrule"], b["status"]) == ("emergency", 1, "", "active")
            assert body["dispatch"] == {"sent": ["spk-hold", "spk-mute"], "waiting_clip": ["spk-need"],
                                        "fallback": ["spk-off"], "acked": []}
            stored = await Broadcast.get(id=b["id"])
            entry = body["entry_id"]
            start_s = int(entry.split(".")[1])
            assert entry == f"b{b['id']}.{start_s}" and before.timestamp() <= start_s <= datetime.now(UTC).timestamp()
            assert stored.in_force_until is not None
            # stored and versioned like any broadcast; the calendar's review comes with the answer
            versions = (await http.get(f"/api/broadcasts/{b['id']}/versions")).json()
            assert [(v["version"], v["definition"]["level"]) for v in versions] == [(1, "emergency")]
            assert body["review"]["speakers"] == ["spk-hold", "spk-mute", "spk-need", "spk-off"]
            assert body["review"]["conflicts_total"] == 0
            assert stored.in_force_until.timestamp() == start_s + 30 * 60

            # holding the clip: the command at once, acked; its receipt delivered
            await dispatch_in(b["id"], "spk-hold", "acked")
            (command,) = nodes.commands("spk-hold", "speaker.broadcast")
            assert command["args"] == {"id": entry, "clip": esp_name, "emergency": True}
            assert command["exp"] == (start_s + 30) * 1000
            assert (await Command.get(id=command["id"])).status == "ok"
            # its receipt: delivered by the ack, clip ready as it holds the clip (whichever came first)
            async def receipt_ready() -> bool:
                row = await BroadcastReceipt.get(entry_id=entry, device_id="spk-hold")
                return row.state == ReceiptState.CLIP_READY and row.emergency

            await async_wait_for(receipt_ready, what="spk-hold's receipt clip_ready")

            # without the clip: fetched first (a real download), then the command, then acked
            await dispatch_in(b["id"], "spk-need", "acked")
            names = [c["name"] for c in nodes.named("spk-need").commands if c["name"].startswith("speaker.")]
            assert names == ["speaker.clip_fetch", "speaker.broadcast"]
            assert nodes.named("spk-need").downloaded == [(files["pi"]["sha256"], files["pi"]["bytes"])]
            (command,) = nodes.commands("spk-need", "speaker.broadcast")
            assert command["args"] == {"id": entry, "clip": "c" + files["pi"]["sha256"][:24], "emergency": True}

            # offline: fallback at once, its delivery due (its desired state carries the entry)
            off = await EmergencyDispatch.get(broadcast_id=b["id"], device_id="spk-off")
            assert off.state == "fallback" and off.command_id is None
            if delivering(http):
                await in_desired_state("spk-off", entry)
            else:
                assert (await SpeakerDelivery.get(device_id="spk-off")).reason == emergency_part.DUE_REASON

            # no answer: still `sent` until the expiry (+ the margin) passes at the tick, then fallback
            emergencies = part(http)
            await emergencies.tick(datetime.fromtimestamp(start_s + 30, UTC))
            assert (await EmergencyDispatch.get(broadcast_id=b["id"], device_id="spk-mute")).state == "sent"
            await emergencies.tick(datetime.fromtimestamp(start_s + 30 + emergency_part.ANSWER_MARGIN_S, UTC))
            assert (await EmergencyDispatch.get(broadcast_id=b["id"], device_id="spk-mute")).state == "fallback"
            if delivering(http):
                await in_desired_state("spk-mute", entry)
                # never both: the speakers that took the command do not get the entry
                assert all(e.get("id") != entry for e in await schedule_of("spk-hold"))
                assert all(e.get("id") != entry for e in await schedule_of("spk-need"))
            else:
                assert (await SpeakerDelivery.get(device_id="spk-mute")).reason == emergency_part.DUE_REASON

            receipts = await BroadcastReceipt.filter(entry_id=entry).order_by("device_id")
            assert [(r.device_id, r.emergency) for r in receipts] == [
                ("spk-hold", True), ("spk-mute", True), ("spk-need", True), ("spk-off", True)]
            audit = await AuditEntry.get(action="broadcast.emergency", target=str(b["id"]))
            assert audit.detail == {"title": "Cháy chợ", "in_force_min": 30, "sent": 2, "waiting_clip": 1,
                                    "fallback": 1}

            # cancel: the Pi that acked is told to stop (the ESP32 has no stop command)
            cancelled = await http.post(f"/api/broadcasts/{b['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text

            async def stopped() -> bool:
                return len(nodes.commands("spk-need", "speaker.stop")) == 1

            await async_wait_for(stopped, what="speaker.stop to the Pi")
            assert nodes.commands("spk-hold", "speaker.stop") == []
            assert nodes.errors == []


async def test_emergency_refusals(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with audio_fleet(tmp_path, mosquitto, database_url) as http:
        made = await http.post("/api/devices", json={"id": "light-1", "kind": "esp32", "ward": WARD})
        assert made.status_code == 201
        await Device.filter(id="light-1").update(roles=["light"])
        clip = (await http.post("/api/audio/tts", json={"title": "t", "text": "Thử"}, timeout=60)).json()
        ok = {"title": "x", "clip_id": clip["id"], "targets": {"wards": [WARD]}, "confirm": True}
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({**ok, "confirm": False}, 422, "send confirm=true"),
            ({k: v for k, v in ok.items() if k != "confirm"}, 422, "send confirm=true"),
            (ok, 422, "no speaker is targeted"),  # the ward has a light, no speaker
            ({**ok, "targets": {}}, 422, "targets: name at least one"),
            ({**ok, "clip_id": 999_999}, 422, "no clip 999999"),
            ({**ok, "in_force_min": 0}, 422, ""),
            ({**ok, "in_force_min": 24 * 60 + 1}, 422, ""),
        ]
        for body, status, says in cases:
            answer = await http.post("/api/broadcasts/emergency", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert says in str(answer.json()["detail"])
        ops = await token_for(http, Role.OPS)
        refused = await http.post("/api/broadcasts/emergency", json=ok, headers={"Authorization": f"Bearer {ops}"})
        assert refused.status_code == 403
        assert await Broadcast.all().count() == 0
        assert await EmergencyDispatch.all().count() == 0


async def test_emergency_with_the_broker_down(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    """The broker is down when the button is pressed: the commands are recorded `unsent` and every
    speaker falls back to its desired state (delivery sends it when the link is back)."""
    async with audio_fleet(tmp_path, mosquitto, database_url) as http:
        node = Node("spk-cut", "esp32")
        made = await http.post("/api/devices", json={"id": node.device_id, "kind": "esp32", "ward": WARD})
        assert made.status_code == 201
        clip = (await http.post("/api/audio/tts", json={"title": "t", "text": "Mất điện"}, timeout=60)).json()
        variant = {f["kind"]: f for f in clip["files"]}["esp32"]
        await SpeakerClip.create(device_id=node.device_id, name="c" + variant["sha256"][:24],
                                 sha256=variant["sha256"], bytes=variant["bytes"], state="ready")
        async with speakers(mosquitto.port, [node]):
            pass  # born: online on record (a clean disconnect leaves no death)
        runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
        mosquitto.stop()

        async def down() -> bool:
            return not runtime.link.connected.is_set()

        await async_wait_for(down, what="the fleet's link down")
        started = await http.post("/api/broadcasts/emergency", json={
            "title": "x", "clip_id": clip["id"], "targets": {"devices": [node.device_id]}, "confirm": True})
        assert started.status_code == 201, started.text
        body = started.json()
        assert body["dispatch"] == {"sent": [], "waiting_clip": [], "fallback": [node.device_id], "acked": []}
        row = await EmergencyDispatch.get(broadcast_id=body["broadcast"]["id"], device_id=node.device_id)
        assert row.state == "fallback"
        assert (await Command.get(id=row.command_id)).status == "unsent"
        mosquitto.start()
