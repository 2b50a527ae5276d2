"""Delivery of the broadcast schedules on a real fleet (SQLite and PostgreSQL) with a real
Mosquitto: a saved broadcast reaches a subscribed speaker's retained desired state, edits follow,
an offline speaker gets its document when it comes back (and the occurrences that passed meanwhile
are not in it), a document stored while the broker is down goes out when it is back, and the
refresh before the entries run out, at most one document per 10 s. The clock is moved by passing
`now` to the delivery's tick (the tests take the delivery out of the worker's turns for that):
nothing sleeps."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from edge.roles.speaker_schedule import check
from fleet.auth.roles import Role
from fleet.broadcast.delivery import Delivery, mark_due
from fleet.broadcast.documents import GRACE, NORMAL_MAX, entry_id
from fleet.broadcast.models import (
    Broadcast,
    BroadcastReceipt,
    EmergencyDispatch,
    ReceiptState,
    SpeakerClip,
    SpeakerDelivery,
)
from fleet.models import Device
from fleet.runtime import Runtime
from tests.fleet.audio_kit import audio_fleet
from tests.support.device import ScriptedDevice
from tests.support.fleet import token_for
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
WARD = "Phường 7"
PUBLIC = "http://fleet.example:8000"


def runtime_of(http: httpx.AsyncClient) -> Runtime:
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def delivery_of(http: httpx.AsyncClient, *, take_out: bool = False) -> Delivery:
    """The fleet's delivery part; `take_out`: no longer run by the worker (the test ticks it)."""
    worker = runtime_of(http).broadcasts
    assert worker is not None
    for name, tick in list(worker.parts):
        if name == "delivery":
            if take_out:
                worker.parts.remove((name, tick))
            part = tick.__self__  # type: ignore[attr-defined]
            assert isinstance(part, Delivery)
            return part
    raise AssertionError("no delivery part on the worker")


@asynccontextmanager
async def delivery_fleet(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with audio_fleet(tmp_path, mosquitto, database_url, public_url=PUBLIC) as http:
        yield http


@contextmanager
def speaker(mosquitto: Mosquitto, device_id: str, kind: str = "esp32", ses: int = 1) -> Iterator[ScriptedDevice]:
    device = ScriptedDevice(mosquitto.port, device_id, ses=ses)
    try:
        device.birth(kind=kind, roles=["speaker"])
        yield device
    finally:
        device.close()


async def register(http: httpx.AsyncClient, device_id: str, kind: str = "esp32", ward: str = WARD) -> None:
    made = await http.post("/api/devices", json={"id": device_id, "kind": kind, "ward": ward})
    assert made.status_code == 201, made.text


async def born(device_id: str) -> None:
    async def roles() -> bool:
        device = await Device.get_or_none(id=device_id)
        return device is not None and device.roles == ["speaker"]

    await async_wait_for(roles, what=f"{device_id}'s birth")


async def clip(http: httpx.AsyncClient, text: str = "Thông báo của phường") -> dict[str, Any]:
    made = await http.post("/api/audio/tts", json={"title": text[:30], "text": text}, timeout=60)
    assert made.status_code == 201, made.text
    return dict(made.json())


def desired(device: ScriptedDevice, newer_than: int = 0) -> dict[str, Any] | None:
    """The newest desired state the device received, if newer than `newer_than`."""
    found = [body for topic, body in list(device.received) if topic.endswith("/state/desired")]
    if found and found[-1]["version"] > newer_than:
        return dict(found[-1])
    return None


async def received(device: ScriptedDevice, newer_than: int = 0, what: str = "a desired state") -> dict[str, Any]:
    async def got() -> dict[str, Any] | None:
        return desired(device, newer_than)

    return await async_wait_for(got, timeout=20, what=what)


def local(day: int, hour: int, minute: int = 0) -> datetime:
    d = datetime.now(HCM).date() + timedelta(days=day)
    return datetime(d.year, d.month, d.day, hour, minute)


def ms(at: datetime) -> int:
    return int(at.replace(tzinfo=HCM).timestamp() * 1000)


async def test_a_saved_broadcast_reaches_the_speakers_and_an_edit_follows(
        tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with delivery_fleet(tmp_path, mosquitto, database_url) as http:
        await register(http, "spk-e1", "esp32")
        await register(http, "spk-p1", "pi")
        await register(http, "spk-far", "esp32", ward="elsewhere")
        # the device's other desired keys stay beside `speaker`
        kept = await http.put("/api/devices/spk-e1/desired", json={"doc": {"health_period_s": 60}})
        assert kept.status_code == 200
        made = await clip(http)
        files = {f["kind"]: f for f in made["files"]}
        with speaker(mosquitto, "spk-e1") as esp, speaker(mosquitto, "spk-p1", "pi") as pi, \
                speaker(mosquitto, "spk-far") as far:
            for name in ("spk-e1", "spk-p1", "spk-far"):
                await born(name)
            first = await http.post("/api/broadcasts", json={
                "title": "morning news", "clip_id": made["id"], "targets": {"wards": [WARD]},
                "start": local(1, 6, 30).isoformat(), "rrule": "FREQ=DAILY"})
            assert first.status_code == 201, first.text
            news = first.json()["broadcast"]

            doc = await received(esp, 1, "the ESP32's schedule")
            assert doc["version"] == 2 and doc["doc"]["health_period_s"] == 60
            part = doc["doc"]["speaker"]
            check(part)
            # the ESP32 gets the nearest 3 (its heap: docs/broadcasts.md, "Known gap in the firmware")
            starts = [local(day, 6, 30) for day in range(1, 8)]
            assert [e["at"] for e in part["schedule"]] == [ms(s) for s in starts][:3]
            first_entry = part["schedule"][0]
            assert first_entry["id"] == f"b{news['id']}.{first_entry['at'] // 1000}"
            assert first_entry["clip"] == "c" + files["esp32"]["sha256"][:24]
            assert part["tz_min"] == 420 and part["volume"] == 70 and "clips" not in part

            pi_doc = (await received(pi, 0, "the Pi's schedule"))["doc"]["speaker"]
            check(pi_doc)
            assert [c["name"] for c in pi_doc["clips"]] == ["c" + files["pi"]["sha256"][:24]]
            url = pi_doc["clips"][0]["url"]
            assert url.startswith(f"{PUBLIC}/audio/files/{files['pi']['sha256']}?t=")
            # the URL is the fleet's own download: it serves the Pi variant to that token
            download = await http.get(url.removeprefix(PUBLIC), headers={"Authorization": ""})
            assert download.status_code == 200 and len(download.content) == files["pi"]["bytes"]
            assert all(e["volume"] == 70 for e in pi_doc["schedule"])
            assert desired(far) is None  # another ward: nothing

            # the rows delivery keeps: sent, receipts pending for each entry, the clip wanted
            # the device may hold the document before the fleet's publish has returned and cleared `unsent`
            async def sent() -> SpeakerDelivery | None:
                got = await SpeakerDelivery.get(device_id="spk-e1")
                return None if got.unsent else got
            row = await async_wait_for(sent, what="the delivery row marked sent")
            assert row.sent_version == 2 and row.due_at is not None
            pending = await BroadcastReceipt.filter(device_id="spk-e1").values_list("entry_id", "state", "version")
            assert sorted(pending) == sorted((e["id"], ReceiptState.PENDING, 1) for e in part["schedule"])
            wanted = await SpeakerClip.get(device_id="spk-e1")
            assert (wanted.name, wanted.sha256) == (first_entry["clip"], files["esp32"]["sha256"])
            assert wanted.state in ("wanted", "sent")  # the clip sender may have sent its clip_fetch already
            esp.send("state/reported", version=2, status="applied")

            async def applied() -> bool:
                return (await SpeakerDelivery.get(device_id="spk-e1")).applied_version == 2

            await async_wait_for(applied, what="the applied version recorded")

            # a ward volume profile: each entry at its local time's volume (Pi), the next one's (ESP32)
            bad = await http.put(f"/api/ward-volumes/{WARD}", json={"steps": [{"from": "06:00", "volume": 50},
                                                                              {"from": "06:00", "volume": 60}]})
            assert bad.status_code == 422 and "twice" in bad.json()["detail"]
            assert (await http.put(f"/api/ward-volumes/{WARD}", json={"steps": [{"from": "25:00", "volume": 5}]})
                    ).status_code == 422
            operator = await token_for(http, Role.OPS)
            refused = await http.put(f"/api/ward-volumes/{WARD}", json={"steps": [{"from": "06:00", "volume": 40}]},
                                     headers={"Authorization": f"Bearer {operator}"})
            assert refused.status_code == 403
            put = await http.put(f"/api/ward-volumes/{WARD}", json={"steps": [{"from": "21:00", "volume": 20},
                                                                              {"from": "06:00", "volume": 85}]})
            assert put.status_code == 200, put.text
            assert put.json()["steps"] == [{"from": "06:00", "volume": 85}, {"from": "21:00", "volume": 20}]
            assert (await http.get("/api/ward-volumes")).json()[0]["ward"] == WARD
            louder = await received(pi, 1, "the Pi's volumes")
            assert {e["volume"] for e in louder["doc"]["speaker"]["schedule"]} == {85}

            # an edit: the new times reach the speaker; the old entries' receipts are withdrawn
            moved = await http.put(f"/api/broadcasts/{news['id']}", json={
                "title": "morning news", "clip_id": made["id"], "targets": {"wards": [WARD]},
                "start": local(1, 7, 0).isoformat(), "rrule": "FREQ=DAILY", "version": 1})
            assert moved.status_code == 200, moved.text

            async def edited() -> dict[str, Any] | None:
                got = desired(esp, 2)
                if got and got["doc"]["speaker"]["schedule"][0]["at"] == ms(local(1, 7, 0)):
                    return got
                return None

            after = await async_wait_for(edited, timeout=20, what="the edited schedule")
            assert after["doc"]["speaker"]["volume"] == 85 and after["doc"]["health_period_s"] == 60
            old = await BroadcastReceipt.get(device_id="spk-e1", entry_id=first_entry["id"])
            assert old.state == ReceiptState.SKIPPED and old.reason and old.reason.startswith("withdrawn")
            new = await BroadcastReceipt.get(device_id="spk-e1", entry_id=after["doc"]["speaker"]["schedule"][0]["id"])
            assert (new.state, new.version) == (ReceiptState.PENDING, 2)

            # an edit that no longer targets the ESP32: its entries are removed, the Pi keeps them
            pi_before = desired(pi)
            assert pi_before is not None
            retargeted = await http.put(f"/api/broadcasts/{news['id']}", json={
                "title": "morning news", "clip_id": made["id"], "targets": {"devices": ["spk-p1"]},
                "start": local(1, 7, 0).isoformat(), "rrule": "FREQ=DAILY", "version": 2})
            assert retargeted.status_code == 200, retargeted.text

            async def emptied(device: ScriptedDevice, newer_than: int) -> bool:
                got = desired(device, newer_than)
                return got is not None and got["doc"]["speaker"]["schedule"] == []

            await async_wait_for(lambda: emptied(esp, after["version"]), timeout=20, what="the ESP32 untargeted")
            assert desired(pi, 0)["doc"]["speaker"]["schedule"]  # type: ignore[index]

            # cancelled: the speakers' schedules are emptied
            assert (await http.post(f"/api/broadcasts/{news['id']}/cancel")).status_code == 200
            await async_wait_for(lambda: emptied(pi, pi_before["version"]), timeout=20, what="the Pi emptied")
            assert (await http.delete(f"/api/ward-volumes/{WARD}")).status_code == 204
            assert (await http.delete(f"/api/ward-volumes/{WARD}")).status_code == 404
            for device in (esp, pi, far):
                device.raw("state/desired", b"", retain=True)
                device.clear_retained()


async def test_an_offline_speaker_gets_its_document_when_it_is_back_without_what_passed(
        tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with delivery_fleet(tmp_path, mosquitto, database_url) as http:
        delivery = delivery_of(http, take_out=True)
        await register(http, "spk-off", "pi")
        made = await clip(http)
        with speaker(mosquitto, "spk-off", "pi"):
            await born("spk-off")
        # offline now (closed): the broadcast is saved, its document waits retained at the broker
        soon = datetime.now(HCM).replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=10)
        saved = await http.post("/api/broadcasts", json={
            "title": "every 20 minutes", "clip_id": made["id"], "targets": {"devices": ["spk-off"]},
            "start": soon.isoformat(), "rrule": "FREQ=HOURLY"})
        assert saved.status_code == 201, saved.text
        now = datetime.now(UTC)
        await delivery.tick(now)
        first = await SpeakerDelivery.get(device_id="spk-off")
        assert first.sent_version == 1 and not first.unsent
        ats = [e["at"] for e in first.doc["schedule"]]  # type: ignore[index]
        assert len(ats) == NORMAL_MAX and ats[0] == ms(soon)

        # back 90 minutes later (the clock moved): its birth makes it due; the retained document
        # arrives at once, and the new one has none of the occurrences that passed meanwhile
        later = now + timedelta(minutes=90)
        with speaker(mosquitto, "spk-off", "pi", ses=2) as device:
            waiting = await received(device, 0, "the retained document")
            assert waiting["version"] == 1 and waiting["doc"]["speaker"]["schedule"][0]["at"] == ms(soon)

            async def due() -> bool:
                row = await SpeakerDelivery.get(device_id="spk-off")
                return row.reason == "birth" and row.due_at is not None and row.due_at <= later

            await async_wait_for(due, what="the birth marking it due")
            await delivery.tick(later)
            fresh = await received(device, 1, "the document after the reconnect")
            entries = fresh["doc"]["speaker"]["schedule"]
            assert all(e["at"] > (later - GRACE).timestamp() * 1000 for e in entries)
            assert entries[0]["at"] == ms(soon) + 2 * 3600_000  # 10 min and 70 min ago passed
            assert len(entries) == NORMAL_MAX
            # the same again: nothing new is sent
            await delivery.tick(later + timedelta(seconds=30))
            assert (await SpeakerDelivery.get(device_id="spk-off")).sent_version == 2
            device.raw("state/desired", b"", retain=True)
            device.clear_retained()


async def test_a_document_stored_while_the_broker_is_down_goes_out_when_it_is_back(
        tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with delivery_fleet(tmp_path, mosquitto, database_url) as http:
        delivery = delivery_of(http, take_out=True)
        link = runtime_of(http).link
        await register(http, "spk-down")
        made = await clip(http)
        with speaker(mosquitto, "spk-down"):
            await born("spk-down")
        mosquitto.kill()

        async def down() -> bool:
            return not link.connected.is_set()

        await async_wait_for(down, what="the link down")
        saved = await http.post("/api/broadcasts", json={
            "title": "market day", "clip_id": made["id"], "targets": {"wards": [WARD]},
            "start": local(2, 8, 0).isoformat()})
        assert saved.status_code == 201, saved.text
        now = datetime.now(UTC)
        await delivery.tick(now)
        row = await SpeakerDelivery.get(device_id="spk-down")
        assert row.unsent and row.sent_version == 1
        assert (await Device.get(id="spk-down")).desired_version == 1
        mosquitto.start()

        async def up() -> bool:
            return link.connected.is_set()

        await async_wait_for(up, timeout=60, what="the link back")
        await delivery.tick(now + timedelta(seconds=1))
        assert not (await SpeakerDelivery.get(device_id="spk-down")).unsent
        with speaker(mosquitto, "spk-down", ses=2) as device:
            doc = await received(device, 0, "the document sent after the outage")
            broadcast_id = saved.json()["broadcast"]["id"]
            start = local(2, 8, 0).replace(tzinfo=HCM)
            assert doc["version"] == 1 and [e["id"] for e in doc["doc"]["speaker"]["schedule"]] == [
                entry_id(broadcast_id, start)]
            device.raw("state/desired", b"", retain=True)
            device.clear_retained()


async def test_the_document_is_refreshed_before_its_entries_run_out(
        tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with delivery_fleet(tmp_path, mosquitto, database_url) as http:
        delivery = delivery_of(http, take_out=True)
        await register(http, "spk-ref", "pi")
        made = await clip(http)
        with speaker(mosquitto, "spk-ref", "pi") as device:
            await born("spk-ref")
            start = datetime.now(HCM).replace(tzinfo=None, minute=0, second=0, microsecond=0) + timedelta(hours=1)
            saved = await http.post("/api/broadcasts", json={
                "title": "hourly", "clip_id": made["id"], "targets": {"wards": [WARD]},
                "start": start.isoformat(), "rrule": "FREQ=HOURLY"})
            assert saved.status_code == 201, saved.text
            now = datetime.now(UTC)
            await delivery.tick(now)
            first = await received(device, 0, "the first 30")
            entries = first["doc"]["speaker"]["schedule"]
            assert len(entries) == NORMAL_MAX
            row = await SpeakerDelivery.get(device_id="spk-ref")
            assert row.due_at is not None
            # 30 hourly entries reach 30 h ahead: due when the last is a day ahead
            assert row.due_at == datetime.fromtimestamp(entries[-1]["at"] / 1000, UTC) - timedelta(days=1)
            # before it is due, nothing happens
            await delivery.tick(row.due_at - timedelta(seconds=1))
            assert (await SpeakerDelivery.get(device_id="spk-ref")).sent_version == 1
            await delivery.tick(row.due_at)
            second = await received(device, 1, "the refreshed schedule")
            fresh = second["doc"]["speaker"]["schedule"]
            assert len(fresh) == NORMAL_MAX and fresh[-1]["at"] > entries[-1]["at"]
            assert fresh[0]["at"] > (row.due_at - GRACE).timestamp() * 1000
            # a change a second later (the ward's volume) waits out the 10 s since the last document
            put = await http.put(f"/api/ward-volumes/{WARD}", json={"steps": [{"from": "00:00", "volume": 55}]})
            assert put.status_code == 200
            await delivery.tick(row.due_at + timedelta(seconds=1))
            held = await SpeakerDelivery.get(device_id="spk-ref")
            assert held.sent_version == 2 and held.due_at == row.due_at + timedelta(seconds=10)
            await delivery.tick(row.due_at + timedelta(seconds=10))
            third = await received(device, 2, "the coalesced change")
            assert third["doc"]["speaker"]["volume"] == 55
            device.raw("state/desired", b"", retain=True)
            device.clear_retained()


async def test_two_fleet_instances_share_the_due_speakers_without_sending_one_twice(
        tmp_path: Path, mosquitto: Mosquitto, database_url: str, monkeypatch: Any) -> None:
    async with delivery_fleet(tmp_path, mosquitto, database_url) as http:
        delivery_of(http, take_out=True)
        runtime = runtime_of(http)
        # two deliveries on one database, as two fleet processes would run them; few claims per turn
        monkeypatch.setattr("fleet.broadcast.delivery.CLAIM_MAX", 3)
        first, second = Delivery(runtime.link, runtime.settings), Delivery(runtime.link, runtime.settings)
        names = [f"spk-s{i:02d}" for i in range(12)]
        for name in names:
            await register(http, name)
        await Device.filter(id__in=names).update(roles=["speaker"])  # as their births would set it
        made = await clip(http)
        saved = await http.post("/api/broadcasts", json={
            "title": "shared", "clip_id": made["id"], "targets": {"wards": [WARD]},
            "start": local(1, 9, 0).isoformat()})
        assert saved.status_code == 201, saved.text
        now = datetime.now(UTC)
        for _ in range(10):
            if not await SpeakerDelivery.filter(due_at__lte=now).exists():
                break
            await asyncio.gather(first.tick(now), second.tick(now))
        assert first.computed > 0 and second.computed > 0 and first.computed + second.computed == len(names)
        versions = await Device.filter(id__in=names).values_list("desired_version", flat=True)
        assert versions == [1] * len(names)  # each speaker's document claimed once
        assert await BroadcastReceipt.filter(device_id__in=names).count() == len(names)


async def test_decommissioned_devices_and_non_speakers_get_nothing(
        tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with delivery_fleet(tmp_path, mosquitto, database_url) as http:
        delivery = delivery_of(http, take_out=True)
        for name in ("spk-keep", "spk-gone", "light-w"):
            await register(http, name)
        await Device.filter(id__in=["spk-keep", "spk-gone"]).update(roles=["speaker"])
        await Device.filter(id="light-w").update(roles=["light"])
        made = await clip(http)
        saved = await http.post("/api/broadcasts", json={
            "title": "ward news", "clip_id": made["id"], "targets": {"wards": [WARD], "devices": ["light-w"]},
            "start": local(1, 10, 0).isoformat()})
        assert saved.status_code == 201, saved.text
        assert saved.json()["review"]["speakers"] == ["spk-gone", "spk-keep"]
        assert (await http.post("/api/devices/spk-gone/decommission")).status_code == 200
        # marked due anyway (a birth as a speaker would do it): still nothing for them
        await mark_due(["spk-gone", "light-w"], "test")
        await delivery.tick(datetime.now(UTC))
        versions = dict(await Device.filter(id__in=["spk-keep", "spk-gone", "light-w"]).values_list(
            "id", "desired_version"))
        assert versions == {"spk-keep": 1, "spk-gone": 0, "light-w": 0}
        assert await BroadcastReceipt.filter(device_id__in=["spk-gone", "light-w"]).count() == 0
        for name in ("spk-gone", "light-w"):
            row = await SpeakerDelivery.get(device_id=name)
            assert row.due_at is None and row.sent_version is None


async def test_an_emergency_in_force_reaches_a_speaker_back_after_the_grace_at_its_reconnect(
        tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    """The document side of the emergency fallback (docs/broadcasts.md, "What goes in", step 4): the
    emergency path's rows are written here by hand, its worker parts taken out."""
    async with delivery_fleet(tmp_path, mosquitto, database_url) as http:
        delivery = delivery_of(http, take_out=True)
        worker = runtime_of(http).broadcasts
        assert worker is not None
        worker.parts.clear()  # no command, no dispatch of the emergency path: only what this test writes
        await register(http, "spk-em")
        await Device.filter(id="spk-em").update(roles=["speaker"])
        made = await clip(http)
        saved = await http.post("/api/broadcasts", json={
            "title": "flood", "clip_id": made["id"], "targets": {"wards": [WARD]}, "level": "emergency",
            "start": (datetime.now(HCM) + timedelta(minutes=1)).replace(tzinfo=None).isoformat()})
        assert saved.status_code == 201, saved.text
        broadcast_id = saved.json()["broadcast"]["id"]
        # as if pressed 5 minutes ago, in force for 30 minutes, the command unanswered (fallback)
        now = datetime.now(UTC)
        pressed = (now - timedelta(minutes=5)).replace(microsecond=0)
        await Broadcast.filter(id=broadcast_id).update(
            start_local=pressed.astimezone(HCM).replace(tzinfo=None).isoformat(),
            in_force_until=pressed + timedelta(minutes=30), created_at=pressed)
        await EmergencyDispatch.create(broadcast_id=broadcast_id, device_id="spk-em", state="fallback")
        entry = entry_id(broadcast_id, pressed)

        # away since before the press: past the 2 min grace nothing is put in its document
        await mark_due(["spk-em"], "test", now)
        await delivery.tick(now)
        assert (await Device.get(id="spk-em")).desired_version == 0
        # back now: its birth makes it due, the entry goes in at the reconnect's time
        with speaker(mosquitto, "spk-em") as device:
            async def birth_at() -> datetime | None:
                return (await Device.get(id="spk-em")).last_birth_at

            back = await async_wait_for(birth_at, what="the reconnect's birth")
            assert back >= pressed + GRACE
            await delivery.tick(datetime.now(UTC))
            doc = await received(device, 0, "the emergency at the reconnect")
            esp32 = next(f for f in made["files"] if f["kind"] == "esp32")
            assert doc["doc"]["speaker"]["schedule"] == [
                {"id": entry, "clip": "c" + esp32["sha256"][:24], "at": int(back.timestamp() * 1000),
                 "emergency": True}]
            receipt = await BroadcastReceipt.get(device_id="spk-em", entry_id=entry)
            assert receipt.emergency and receipt.state == ReceiptState.PENDING
            # recomputed later: the same time (a node never plays it twice), nothing new sent
            await mark_due(["spk-em"], "test")
            await delivery.tick(datetime.now(UTC) + timedelta(minutes=3))
            assert (await Device.get(id="spk-em")).desired_version == 1
            # once it has played there, a reconnect does not bring it back
            await BroadcastReceipt.filter(id=receipt.id).update(state=ReceiptState.COMPLETED)
            await mark_due(["spk-em"], "test")
            await delivery.tick(datetime.now(UTC) + timedelta(minutes=4))
            gone = await received(device, 1, "the emergency taken out")
            assert gone["doc"]["speaker"]["schedule"] == []
            device.raw("state/desired", b"", retain=True)
            device.clear_retained()


async def test_an_operator_document_without_the_schedule_gets_it_back_at_the_next_turn(
        tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with delivery_fleet(tmp_path, mosquitto, database_url) as http:
        delivery = delivery_of(http, take_out=True)
        await register(http, "spk-put")
        await Device.filter(id="spk-put").update(roles=["speaker"])
        made = await clip(http)
        saved = await http.post("/api/broadcasts", json={
            "title": "ward news", "clip_id": made["id"], "targets": {"devices": ["spk-put"]},
            "start": local(1, 10, 0).isoformat()})
        assert saved.status_code == 201, saved.text
        await delivery.tick(datetime.now(UTC))
        first = await Device.get(id="spk-put")
        assert first.desired_version == 1 and len(first.desired_doc["speaker"]["schedule"]) == 1
        # an operator replaces the whole document, the schedule with it
        put = await http.put("/api/devices/spk-put/desired", json={"doc": {"health_period_s": 60}})
        assert put.status_code == 200, put.text
        row = await SpeakerDelivery.get(device_id="spk-put")
        assert row.reason == "desired replaced" and row.due_at is not None
        await delivery.tick(datetime.now(UTC) + timedelta(seconds=11))  # past the 10 s between documents
        back = await Device.get(id="spk-put")
        assert back.desired_version == 3
        assert back.desired_doc == {"health_period_s": 60, "speaker": first.desired_doc["speaker"]}
