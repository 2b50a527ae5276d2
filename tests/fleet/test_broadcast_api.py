"""The broadcasts calendar through the API on a real fleet (SQLite and PostgreSQL): targets to
speakers, dry run, conflicts shown before saving (409 unless confirm), quiet hours, versions on
edit, cancel, repeat, the clip kept while a broadcast will play it, roles and the audit log."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from fleet.auth.roles import Role
from fleet.models import Device
from tests.fleet.audio_kit import audio_fleet
from tests.support.fleet import token_for
from tests.support.mosquitto import Mosquitto

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
WARD = "Tân Phú"


async def _speakers(http: httpx.AsyncClient) -> None:
    for device_id, ward, tags, roles in (("spk-a1", WARD, [], ["speaker"]), ("spk-a2", WARD, [], ["speaker"]),
                                          ("spk-b1", "Tân Bình", ["market"], ["speaker"]),
                                          ("light-a1", WARD, ["market"], ["light"])):
        made = await http.post("/api/devices", json={"id": device_id, "kind": "esp32", "ward": ward, "tags": tags})
        assert made.status_code == 201, made.text
        # the roles a device runs come from its birth; the registry is set as a birth would set it
        await Device.filter(id=device_id).update(roles=roles)


def _tomorrow(hour: int, minute: int = 0) -> str:
    day = datetime.now(HCM).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute).isoformat()


def _body(clip: int, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"title": "news", "clip_id": clip, "targets": {"wards": [WARD]},
                            "start": _tomorrow(6, 30), "rrule": "FREQ=DAILY"}
    body.update(fields)
    return body


async def test_calendar(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with audio_fleet(tmp_path, mosquitto, database_url) as http:
        await _speakers(http)
        clip = (await http.post("/api/audio/tts", json={"title": "tin", "text": "Bản tin sáng"})).json()
        cid = clip["id"]

        # a dry run: the speakers, the next occurrences, nothing stored
        review = await http.post("/api/broadcasts", json=_body(cid, dry_run=True))
        assert review.status_code == 200, review.text
        shown = review.json()
        assert shown["speakers"] == ["spk-a1", "spk-a2"] and shown["conflicts_total"] == 0
        assert [o["local"][11:16] for o in shown["occurrences"]] == ["06:30"] * 10
        assert (await http.get("/api/broadcasts")).headers["X-Total-Count"] == "0"

        saved = await http.post("/api/broadcasts", json=_body(cid))
        assert saved.status_code == 201, saved.text
        news = saved.json()["broadcast"]
        assert news["version"] == 1 and news["timezone"] == "Asia/Ho_Chi_Minh" and news["ends_at"] is None
        assert news["next"][0]["local"] == _tomorrow(6, 30) + "+07:00"

        # a priority broadcast on a shared speaker at the same time: shown, refused without confirm
        alert_body = _body(cid, title="market alert", level="priority", rrule="",
                           targets={"tags": ["market"], "devices": ["spk-a1"]}, start=_tomorrow(6, 30))
        refused = await http.post("/api/broadcasts", json=alert_body)
        assert refused.status_code == 409
        conflicts = refused.json()["review"]["conflicts"]
        assert [(c["other_id"], c["speakers"], c["winner"], c["reason"]) for c in conflicts] == [
            (news["id"], ["spk-a1"], "this", "level")]
        assert "confirm=true" in refused.json()["detail"]
        assert refused.json()["review"]["speakers"] == ["spk-a1", "spk-b1"]  # not the light, which has the tag
        assert (await http.get("/api/broadcasts")).headers["X-Total-Count"] == "1"
        alert = (await http.post("/api/broadcasts", json={**alert_body, "confirm": True})).json()["broadcast"]
        assert alert["ends_at"] is not None

        # same level: the lower order wins; the priority one still wins by level
        early = await http.post("/api/broadcasts", json=_body(cid, title="early", order=5, rrule="", dry_run=True))
        assert sorted((c["other_id"], c["winner"], c["reason"]) for c in early.json()["conflicts"]) == [
            (news["id"], "this", "order"), (alert["id"], "other", "level")]

        # quiet hours: a normal one at night is not played in the ward; a priority one is
        put = await http.put(f"/api/quiet-hours/{WARD}", json={"start": "22:00", "end": "05:00"})
        assert put.status_code == 200 and put.json()["ward"] == WARD
        night = await http.post("/api/broadcasts", json=_body(cid, rrule="", start=_tomorrow(23, 0), dry_run=True))
        assert [q["speakers"] for q in night.json()["quiet"]] == [["spk-a1", "spk-a2"]]
        loud = await http.post("/api/broadcasts", json=_body(cid, rrule="", start=_tomorrow(23, 0), level="priority",
                                                             dry_run=True))
        assert loud.json()["quiet"] == []
        assert (await http.get("/api/quiet-hours")).json()[0]["start"] == "22:00"
        assert (await http.delete(f"/api/quiet-hours/{WARD}")).status_code == 204
        assert (await http.delete(f"/api/quiet-hours/{WARD}")).status_code == 404

        # edit: a new version; an edit of an old version is refused; every version kept
        moved = _body(cid, start=_tomorrow(7, 0), exceptions=[_tomorrow(0)[:10]], version=1)
        edited = await http.put(f"/api/broadcasts/{news['id']}", json=moved)
        assert edited.status_code == 200, edited.text
        assert edited.json()["broadcast"]["version"] == 2
        assert edited.json()["broadcast"]["next"][0]["local"][:10] != _tomorrow(0)[:10]  # the exception
        # an edit that makes a conflict is shown before it is saved, like a create
        onto_alert = {**moved, "version": 2, "start": _tomorrow(6, 30), "exceptions": []}
        held = await http.put(f"/api/broadcasts/{news['id']}", json=onto_alert)
        assert held.status_code == 409 and held.json()["review"]["conflicts"][0]["other_id"] == alert["id"]
        assert (await http.get(f"/api/broadcasts/{news['id']}")).json()["version"] == 2
        stale = await http.put(f"/api/broadcasts/{news['id']}", json=moved)
        assert stale.status_code == 409 and "at version 2" in stale.json()["detail"]
        versions = (await http.get(f"/api/broadcasts/{news['id']}/versions")).json()
        assert [(v["version"], v["definition"]["start"][11:16]) for v in versions] == [(1, "06:30"), (2, "07:00")]

        # the clip is kept while broadcasts will play it
        in_use = await http.delete(f"/api/audio/{cid}")
        assert in_use.status_code == 409 and str(news["id"]) in in_use.json()["detail"]

        # repeat: a one-off copy, a minute from now by default
        repeated = await http.post(f"/api/broadcasts/{alert['id']}/repeat", json={})
        assert repeated.status_code == 201, repeated.text
        copy = repeated.json()["broadcast"]
        assert (copy["repeat_of"], copy["level"], copy["rrule"], copy["targets"]) == (
            alert["id"], "priority", "", alert["targets"])
        starts_in = datetime.fromisoformat(copy["next"][0]["start"]) - datetime.now(UTC)
        assert timedelta(seconds=0) < starts_in <= timedelta(minutes=1)

        # cancel: a new version; twice, or an edit after it, is refused
        cancelled = await http.post(f"/api/broadcasts/{news['id']}/cancel")
        assert cancelled.status_code == 200
        shown = cancelled.json()
        assert (shown["status"], shown["version"], shown["next"]) == ("cancelled", 3, [])
        assert (await http.post(f"/api/broadcasts/{news['id']}/cancel")).status_code == 409
        after = await http.put(f"/api/broadcasts/{news['id']}", json={**moved, "version": 3})
        assert after.status_code == 409 and "cancelled" in after.json()["detail"]
        listed = await http.get("/api/broadcasts", params={"status": "active"})
        assert [b["id"] for b in listed.json()] == [copy["id"], alert["id"]]
        got = await http.get(f"/api/broadcasts/{alert['id']}", params={"next": 0})
        assert got.status_code == 200 and got.json()["next"] == []
        assert (await http.get("/api/broadcasts/999999")).status_code == 404

        audit = (await http.get("/api/audit", params={"limit": 200})).json()
        entries = audit if isinstance(audit, list) else audit["entries"]
        actions = {e["action"] for e in entries}
        assert {"broadcast.create", "broadcast.edit", "broadcast.cancel", "broadcast.repeat", "quiet_hours.set",
                "quiet_hours.delete"} <= actions


async def test_refusals_and_roles(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with audio_fleet(tmp_path, mosquitto) as http:
        await _speakers(http)
        cid = (await http.post("/api/audio/tts", json={"title": "t", "text": "Xin chào"})).json()["id"]
        for fields, why in (({"rrule": "FREQ=DAILY;COUNT=3"}, "use the 'count' field"),
                            ({"rrule": "FREQ=MINUTELY"}, "refused"),
                            ({"targets": {}}, "name at least one ward, tag or speaker"),
                            ({"rrule": "", "start": "2020-01-01T06:30"}, "no occurrence after now"),
                            ({"clip_id": 424242}, "no clip 424242"),
                            ({"rrule": "", "count": 3}, "recurring")):
            refused = await http.post("/api/broadcasts", json=_body(cid, **fields))
            assert refused.status_code == 422 and why in refused.json()["detail"], (fields, refused.text)
        shape = await http.post("/api/broadcasts", json=_body(cid, level="urgent"))
        assert shape.status_code == 422 and isinstance(shape.json()["detail"], list)

        operator = {"Authorization": f"Bearer {await token_for(http, Role.IOC_OPERATOR)}"}
        reader = {"Authorization": f"Bearer {await token_for(http, Role.READ_ONLY)}"}
        ops = {"Authorization": f"Bearer {await token_for(http, Role.OPS)}"}
        made = await http.post("/api/broadcasts", json=_body(cid), headers=operator)
        assert made.status_code == 201
        bid = made.json()["broadcast"]["id"]
        for headers in (reader, ops):
            assert (await http.get(f"/api/broadcasts/{bid}", headers=headers)).status_code == 200
            assert (await http.get("/api/quiet-hours", headers=headers)).status_code == 200
            for method, url, body in (("POST", "/api/broadcasts", _body(cid)),
                                      ("PUT", f"/api/broadcasts/{bid}", {**_body(cid), "version": 1}),
                                      ("POST", f"/api/broadcasts/{bid}/cancel", None),
                                      ("POST", f"/api/broadcasts/{bid}/repeat", {}),
                                      ("PUT", "/api/quiet-hours/x", {"start": "22:00", "end": "05:00"})):
                answer = await http.request(method, url, json=body, headers=headers)
                assert answer.status_code == 403, (method, url, answer.text)
        assert (await http.post(f"/api/broadcasts/{bid}/cancel", headers=operator)).status_code == 200
        # no broadcast will play the clip any more: its files go, the broadcast keeps its history
        assert (await http.delete(f"/api/audio/{cid}", headers=operator)).status_code == 204
        kept = await http.get(f"/api/broadcasts/{bid}")
        assert kept.status_code == 200 and kept.json()["clip_id"] == cid and kept.json()["status"] == "cancelled"
        again = await http.post("/api/broadcasts", json=_body(cid), headers=operator)
        assert again.status_code == 422 and f"no clip {cid}" in again.json()["detail"]


async def test_occurrences_in_a_dst_time_zone(tmp_path: Path, mosquitto: Mosquitto) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    async with audio_fleet(tmp_path, mosquitto, timezone="Europe/Berlin") as http:
        await _speakers(http)
        spoken = await http.post("/api/audio/tts", json={"title": "t", "text": "Good morning", "voice": "en"})
        cid = spoken.json()["id"]
        made = await http.post("/api/broadcasts", json=_body(cid, rrule="FREQ=WEEKLY;BYDAY=SU", start=_tomorrow(6, 30)))
        assert made.status_code == 201, made.text
        assert made.json()["broadcast"]["timezone"] == "Europe/Berlin"
        bid = made.json()["broadcast"]["id"]
        weeks = (await http.get(f"/api/broadcasts/{bid}", params={"next": 30})).json()["next"]
        assert len(weeks) == 30
        # 30 weeks span a daylight-saving change: the wall clock stays 06:30, the UTC time moves by an hour
        locals_ = [datetime.fromisoformat(o["local"]) for o in weeks]
        assert {(t.hour, t.minute, t.weekday()) for t in locals_} == {(6, 30, 6)}
        assert {t.utcoffset() for t in locals_} == {timedelta(hours=1), timedelta(hours=2)}
        for occurrence, local in zip(weeks, locals_, strict=True):
            start = datetime.fromisoformat(occurrence["start"])
            assert start == local and start.astimezone(berlin) == local
