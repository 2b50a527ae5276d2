"""CAP 1.2 import through the API on a real fleet (SQLite and PostgreSQL): an alert becomes a draft
(speakers by ward name and by polygon over their coordinates, a clip from its audio resource or its
text spoken, the calendar's review), an operator confirms it into a broadcast; Update and Cancel
messages; every refusal (malformed, invalid, bombs, oversize, not Actual, expired, no speaker), roles."""

import base64
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from fleet.auth.roles import Role
from fleet.broadcast.models import Broadcast, EmergencyDispatch
from fleet.models import Device
from tests.fleet.audio_kit import audio_fleet, tone
from tests.fleet.cap_alerts import (
    BILLION_LAUGHS,
    alert,
    area,
    external_entity,
    info,
    reference,
    resource,
    soon,
)
from tests.support.fleet import token_for
from tests.support.mosquitto import Mosquitto

CAP_XML = {"Content-Type": "application/cap+xml"}
# a square around spk-a1 and spk-b1, not spk-a2 or spk-b2
SQUARE = "11.52,106.88 11.52,106.90 11.54,106.90 11.54,106.88 11.52,106.88"
SPEAKERS = (("spk-a1", "Tân Phú", 11.53, 106.89), ("spk-a2", "Tân Phú", 11.60, 106.95),
            ("spk-b1", "Tân Bình", 11.531, 106.891), ("spk-b2", "Tân Bình", 11.40, 106.70),
            ("spk-c1", "Tân Xuân", None, None))


async def _speakers(http: httpx.AsyncClient) -> None:
    for device_id, ward, lat, lon in SPEAKERS:
        body: dict[str, Any] = {"id": device_id, "kind": "pi", "ward": ward}
        if lat is not None:
            body.update(latitude=lat, longitude=lon)
        made = await http.post("/api/devices", json=body)
        assert made.status_code == 201, made.text
        await Device.filter(id=device_id).update(roles=["speaker"])  # as its birth would
    light = await http.post("/api/devices", json={"id": "light-a1", "kind": "esp32", "ward": "Tân Phú",
                                                  "latitude": 11.53, "longitude": 106.89})
    assert light.status_code == 201


async def _post(http: httpx.AsyncClient, document: bytes, **headers: str) -> httpx.Response:
    return await http.post("/api/cap", content=document, headers={**CAP_XML, **headers}, timeout=60)


async def test_alert_to_broadcast(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with audio_fleet(tmp_path, mosquitto, database_url) as http:
        await _speakers(http)
        document = alert("DX-1", infos=[info(areas=[area("Phường Tân Phú", polygons=[SQUARE])])])
        imported = await _post(http, document)
        assert imported.status_code == 201, imported.text
        shown = imported.json()
        draft = shown["draft"]
        assert (shown["state"], shown["msg_type"], shown["broadcast_id"]) == ("draft", "Alert", None)
        assert (draft["kind"], draft["level"], draft["start"]) == ("broadcast", "priority", None)  # Severe; now
        # Tân Phú by name; spk-b1 alone of Tân Bình in the square: a single speaker; not the light
        assert draft["targets"] == {"wards": ["Tân Phú"], "tags": [], "devices": ["spk-b1"]}
        assert draft["speakers"] == ["spk-a1", "spk-a2", "spk-b1"]
        assert (draft["wards_named"], draft["in_shapes"]) == (["Tân Phú"], ["spk-a1", "spk-b1"])
        assert (draft["clip_source"], draft["voice"], draft["clip_reused"]) == ("tts", "vi", False)
        assert shown["review"]["speakers"] == ["spk-a1", "spk-a2", "spk-b1"]
        assert shown["review"]["conflicts_total"] == 0 and len(shown["review"]["occurrences"]) == 1
        clip = (await http.get(f"/api/audio/{draft['clip_id']}")).json()
        assert clip["source"] == "tts" and "gió giật cấp 10" in clip["text"] and clip["voice"] == "vi"
        assert "tránh xa cây lớn" in clip["text"]  # description + instruction
        assert (await http.get("/api/broadcasts")).headers["X-Total-Count"] == "0"  # nothing goes out yet

        # the same alert again: 409
        again = await _post(http, document)
        assert again.status_code == 409 and f"CAP alert {shown['id']}" in again.json()["detail"]

        listed = await http.get("/api/cap", params={"state": "draft"})
        assert listed.headers["X-Total-Count"] == "1" and listed.json()[0]["identifier"] == "DX-1"
        one = (await http.get(f"/api/cap/{shown['id']}")).json()
        assert one["review"]["speakers"] == draft["speakers"]
        kept = await http.get(f"/api/cap/{shown['id']}/document")
        assert kept.status_code == 200 and kept.content == document  # the XML as received, as a download
        assert kept.headers["content-type"] == "application/cap+xml"
        assert kept.headers["content-disposition"].startswith("attachment")

        confirmed = await http.post(f"/api/cap/{shown['id']}/confirm")
        assert confirmed.status_code == 200, confirmed.text
        done = confirmed.json()
        assert done["state"] == "confirmed" and done["broadcast_id"] is not None
        broadcast = (await http.get(f"/api/broadcasts/{done['broadcast_id']}")).json()
        assert (broadcast["level"], broadcast["rrule"], broadcast["clip_id"]) == ("priority", "", draft["clip_id"])
        assert broadcast["title"] == "CAP: Cảnh báo bão số 9" and broadcast["targets"] == draft["targets"]
        starts_in = datetime.fromisoformat(broadcast["next"][0]["start"]) - datetime.now(UTC)
        assert timedelta(0) < starts_in <= timedelta(minutes=1)
        again = await http.post(f"/api/cap/{shown['id']}/confirm")
        assert again.status_code == 409 and "is confirmed, not a draft" in again.json()["detail"]

        audit = (await http.get("/api/audit", params={"limit": 200})).json()
        entries = audit if isinstance(audit, list) else audit["entries"]
        assert {"cap.import", "cap.confirm"} <= {e["action"] for e in entries}


async def test_audio_resource_emergency_and_links_not_fetched(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with audio_fleet(tmp_path, mosquitto) as http:
        await _speakers(http)
        wav = tone(tmp_path / "siren.wav", 2.0, hz=880).read_bytes()
        expires = soon(120)
        document = alert("DX-2", infos=[info(
            severity="Extreme", expires=expires, areas=[area("Phường Tân Bình")],
            resources=[resource("còi báo động", "audio/x-wav", deref=base64.b64encode(wav).decode(),
                                digest=hashlib.sha1(wav).hexdigest(), size=len(wav))])])
        imported = await _post(http, document, **{"Content-Type": "application/xml"})
        assert imported.status_code == 201, imported.text
        draft = imported.json()["draft"]
        assert (draft["level"], draft["clip_source"], draft["voice"]) == ("emergency", "resource", None)
        assert draft["targets"]["wards"] == ["Tân Bình"] and draft["notes"] == []
        clip = (await http.get(f"/api/audio/{draft['clip_id']}")).json()
        assert clip["source"] == "upload" and clip["source_format"] == "WAV" and 1900 <= clip["duration_ms"] <= 2100
        done = await http.post(f"/api/cap/{imported.json()['id']}/confirm")
        assert done.status_code == 200, done.text
        # an emergency that starts now goes the emergency button's way: commands at once, else desired state
        assert done.json()["action"] == "emergency"
        broadcast = (await http.get(f"/api/broadcasts/{done.json()['broadcast_id']}")).json()
        assert broadcast["level"] == "emergency"
        dispatched = await EmergencyDispatch.filter(broadcast_id=broadcast["id"]).values_list("device_id", "state")
        assert sorted(dispatched) == [("spk-b1", "fallback"), ("spk-b2", "fallback")]  # offline: desired state
        stored = await Broadcast.get(id=broadcast["id"])
        assert stored.in_force_until is not None  # in force until the alert expires, to the minute
        assert abs(stored.in_force_until - datetime.fromisoformat(expires)) <= timedelta(minutes=1)
        # the same audio in another alert: the library's clip is used again
        second = await _post(http, document.replace(b"DX-2", b"DX-2b"))
        assert second.status_code == 201 and second.json()["draft"]["clip_id"] == draft["clip_id"]
        assert second.json()["draft"]["clip_reused"] is True

        # only a link: not fetched, the English text is spoken instead
        effective = soon(120)
        linked = alert("DX-3", infos=[info(language="en-US", urgency="Immediate", severity="Minor", effective=effective,
                                           description="Flash flood on the market road.", instruction=None,
                                           resources=[resource("siren", "audio/mpeg",
                                                               uri="http://127.0.0.1:9/siren.mp3")],
                                           areas=[area("Tân Xuân ward")])])
        answer = await _post(http, linked)
        assert answer.status_code == 201, answer.text
        draft = answer.json()["draft"]
        assert (draft["level"], draft["clip_source"], draft["voice"]) == ("emergency", "tts", "en")
        assert "the fleet fetches no URL an alert names" in draft["notes"][0]
        assert draft["speakers"] == ["spk-c1"]  # no coordinates: by its ward's name
        # an emergency effective later is scheduled by the calendar, at its effective time
        done = await http.post(f"/api/cap/{answer.json()['id']}/confirm")
        assert done.status_code == 200 and done.json()["action"] == "created"
        later = (await http.get(f"/api/broadcasts/{done.json()['broadcast_id']}")).json()
        assert later["level"] == "emergency"
        assert datetime.fromisoformat(later["next"][0]["start"]) == datetime.fromisoformat(effective)
        assert not await EmergencyDispatch.filter(broadcast_id=later["id"]).exists()

        # audio the library refuses (not audio): the text is spoken instead, and the draft says why
        junk = alert("DX-4", infos=[info(resources=[resource(deref=base64.b64encode(b"not audio" * 50).decode())])])
        answer = await _post(http, junk)
        assert answer.status_code == 201, answer.text
        assert answer.json()["draft"]["clip_source"] == "tts"
        assert "was refused by the library (not an audio file" in answer.json()["draft"]["notes"][0]


async def test_update_and_cancel(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with audio_fleet(tmp_path, mosquitto, database_url) as http:
        await _speakers(http)
        first_sent = soon()
        first = (await _post(http, alert("DX-10", sent=first_sent))).json()
        made = (await http.post(f"/api/cap/{first['id']}/confirm")).json()
        bid = made["broadcast_id"]

        # an Update: a new version of the same broadcast, at the updated alert's effective time
        later = datetime.now(UTC) + timedelta(hours=3)
        update = alert("DX-11", msg_type="Update", references=reference("DX-10", first_sent), infos=[info(
            effective=later.replace(microsecond=0).isoformat(), description="Bão số 9 suy yếu.",
            areas=[area("Phường Tân Phú, Phường Tân Xuân")])])
        imported = await _post(http, update)
        assert imported.status_code == 201, imported.text
        draft = imported.json()["draft"]
        assert draft["updates"] == [first["id"]] and draft["edits_broadcast"] == bid
        assert draft["start"] is not None and draft["targets"]["wards"] == ["Tân Phú", "Tân Xuân"]
        done = await http.post(f"/api/cap/{imported.json()['id']}/confirm")
        assert done.status_code == 200, done.text
        assert done.json()["broadcast_id"] == bid
        edited = (await http.get(f"/api/broadcasts/{bid}")).json()
        assert edited["version"] == 2 and edited["targets"]["wards"] == ["Tân Phú", "Tân Xuân"]
        assert datetime.fromisoformat(edited["next"][0]["start"]) == later.replace(microsecond=0)

        # a Cancel naming the update: the broadcast is cancelled once an operator confirms it
        cancel = alert("DX-12", msg_type="Cancel", references=reference("DX-11", soon()), infos=[])
        imported = await _post(http, cancel)
        assert imported.status_code == 201, imported.text
        assert imported.json()["draft"]["kind"] == "cancel"
        assert imported.json()["draft"]["cancels_broadcasts"] == [bid]
        assert (await http.get(f"/api/broadcasts/{bid}")).json()["status"] == "active"
        done = await http.post(f"/api/cap/{imported.json()['id']}/confirm")
        assert done.status_code == 200, done.text
        assert done.json()["cancelled_broadcasts"] == [bid]
        assert (await http.get(f"/api/broadcasts/{bid}")).json()["status"] == "cancelled"

        # a Cancel of a draft nobody confirmed: the draft can no longer go out
        pending = (await _post(http, alert("DX-20"))).json()
        cancel = alert("DX-21", msg_type="Cancel", infos=[], references=reference("DX-20", soon()))
        stop = (await _post(http, cancel)).json()
        done = await http.post(f"/api/cap/{stop['id']}/confirm")
        assert done.status_code == 200 and done.json()["cancelled_alerts"] == [pending["id"]]
        gone = (await http.get(f"/api/cap/{pending['id']}")).json()
        assert gone["state"] == "cancelled" and gone["reason"] == f"cancelled by CAP alert {stop['id']}"
        late = await http.post(f"/api/cap/{pending['id']}/confirm")
        assert late.status_code == 409 and "is cancelled, not a draft" in late.json()["detail"]

        # an operator may decline a draft
        declined = (await _post(http, alert("DX-30"))).json()
        refused = await http.post(f"/api/cap/{declined['id']}/refuse", json={"reason": "tin trùng"})
        assert refused.status_code == 200 and (refused.json()["state"], refused.json()["reason"]) == (
            "refused", "tin trùng")
        assert (await http.post(f"/api/cap/{declined['id']}/confirm")).status_code == 409


async def _chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at:at + size]


async def test_refusals_and_roles(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with audio_fleet(tmp_path, mosquitto) as http:
        await _speakers(http)

        async def refused(document: bytes, status: int = 422) -> Any:
            answer = await _post(http, document)
            assert answer.status_code == status, answer.text
            return answer.json()["detail"]

        # malformed, invalid, bombs: 422 with the problems by element path
        assert (await refused(b"<alert><identifier>")) == [
            {"loc": ["body", "/"], "msg": "not well-formed XML: no element found (line 1, column 20)", "type": "cap"}]
        invalid = await refused(alert("DX 1", status="Real", infos=[info(urgency="Now", areas=[area(
            polygons=["11.5,106.8 11.6,106.8 11.5,106.8"])])]))
        assert [(p["loc"][1], p["msg"]) for p in invalid] == [
            ("/alert/identifier", "an identifier must not hold spaces, commas, < or &"),
            ("/alert/status", "one of Actual, Exercise, System, Test, Draft"),
            ("/alert/info[1]/urgency", "one of Immediate, Expected, Future, Past, Unknown"),
            ("/alert/info[1]/area[1]/polygon[1]", "a polygon needs at least 4 coordinate pairs, 3 given")]
        for bomb in (BILLION_LAUGHS, external_entity("file:///etc/passwd")):
            detail = await refused(bomb)
            assert detail[0]["msg"] == "a DTD, an entity or an external reference is not allowed (DTDForbidden)"

        # valid alerts the fleet does not broadcast: one sentence each, nothing stored
        assert "only Actual alerts are broadcast" in await refused(alert("T-1", status="Exercise"))
        assert "only Actual alerts are broadcast" in await refused(alert("T-2", status="Test"))
        assert "an acknowledgement or an error message" in await refused(alert("T-3", msg_type="Ack",
                                                                               references=reference("DX", soon())))
        assert "the alert expired at" in await refused(alert("T-4", infos=[info(expires=soon(-5))]))
        assert "covers none of the city's speakers" in await refused(alert("T-5", infos=[info(
            areas=[area("Thành phố Hồ Chí Minh", polygons=["10.7,106.6 10.8,106.6 10.8,106.7 10.7,106.6"])])]))
        assert "names no area" in await refused(alert("T-6", infos=[info(areas=[])]))
        assert "has no text-to-speech voice" in await refused(alert("T-7", infos=[info(language="fr-FR")]))
        assert "names no alert imported here" in await refused(alert("T-8", msg_type="Cancel", infos=[],
                                                                     references=reference("NOPE", soon())))
        assert "without <info> has nothing to broadcast" in await refused(alert("T-9", infos=[]))
        assert (await http.get("/api/cap")).headers["X-Total-Count"] == "0"

        # the body: XML only, at most 1 MB (declared or streamed)
        wrong = await http.post("/api/cap", content=alert("T-10"), headers={"Content-Type": "application/json"})
        assert wrong.status_code == 415
        big = alert("T-11", note="x" * (1024 * 1024))
        assert (await _post(http, big)).status_code == 413
        streamed = await http.post("/api/cap", content=_chunks(big), headers=CAP_XML)
        assert streamed.status_code == 413 and "over the limit of 1048576 bytes" in streamed.json()["detail"]

        # roles: the broadcast permission imports, confirms and refuses; ops and read-only only read
        operator = {"Authorization": f"Bearer {await token_for(http, Role.IOC_OPERATOR)}"}
        made = await _post(http, alert("R-1"), **operator)
        assert made.status_code == 201, made.text
        cid = made.json()["id"]
        for role in (Role.OPS, Role.READ_ONLY):
            headers = {"Authorization": f"Bearer {await token_for(http, role)}"}
            assert (await http.get(f"/api/cap/{cid}", headers=headers)).status_code == 200
            assert (await _post(http, alert("R-2"), **headers)).status_code == 403
            for action in ("confirm", "refuse"):
                assert (await http.post(f"/api/cap/{cid}/{action}", headers=headers)).status_code == 403
        assert (await http.post(f"/api/cap/{cid}/confirm", headers=operator)).status_code == 200
        assert (await http.get("/api/cap/999999")).status_code == 404


async def test_conflicts_wait_for_the_operator_and_an_update_replaces_a_draft(tmp_path: Path,
                                                                               mosquitto: Mosquitto) -> None:
    async with audio_fleet(tmp_path, mosquitto) as http:
        await _speakers(http)
        # an alert effective tomorrow at 06:30 (Vietnam) over a ward where a broadcast already plays then
        tomorrow = (datetime.now(UTC) + timedelta(hours=7)).date() + timedelta(days=1)
        at = f"{tomorrow.isoformat()}T06:30:00+07:00"
        spoken = await http.post("/api/audio/tts", json={"title": "tin", "text": "Bản tin sáng"})
        news = await http.post("/api/broadcasts", json={"title": "news", "clip_id": spoken.json()["id"],
                                                        "targets": {"wards": ["Tân Phú"]}, "start": at[:16]})
        assert news.status_code == 201, news.text
        imported = await _post(http, alert("DX-40", infos=[info(effective=at)]))
        assert imported.status_code == 201, imported.text
        draft = imported.json()["draft"]
        assert datetime.fromisoformat(draft["start"]) == datetime.fromisoformat(at)
        (conflict,) = imported.json()["review"]["conflicts"]
        assert (conflict["speakers"], conflict["winner"], conflict["reason"]) == (["spk-a1", "spk-a2"], "this", "level")

        # an Update of the draft before anyone confirmed it: the draft is replaced
        update = alert("DX-41", msg_type="Update", references=reference("DX-40", soon()),
                       infos=[info(effective=at, description="Bão số 9 đổi hướng.")])
        newer = (await _post(http, update)).json()
        assert newer["draft"]["updates"] == [imported.json()["id"]] and newer["draft"]["edits_broadcast"] is None

        # conflicts: shown again, nothing saved until the operator says confirm
        held = await http.post(f"/api/cap/{newer['id']}/confirm")
        assert held.status_code == 409 and held.json()["review"]["conflicts_total"] == 1
        assert (await http.get(f"/api/cap/{newer['id']}")).json()["state"] == "draft"
        done = await http.post(f"/api/cap/{newer['id']}/confirm", json={"confirm": True})
        assert done.status_code == 200, done.text
        assert done.json()["cancelled_alerts"] == [imported.json()["id"]]
        replaced = (await http.get(f"/api/cap/{imported.json()['id']}")).json()
        assert (replaced["state"], replaced["reason"]) == ("cancelled", f"replaced by CAP alert {newer['id']}")
        made = (await http.get(f"/api/broadcasts/{done.json()['broadcast_id']}")).json()
        assert made["next"][0]["local"] == at and made["level"] == "priority"
