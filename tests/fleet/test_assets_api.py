"""Assets through the API (docs/assets.md) on the real fleet, SQLite and PostgreSQL: validation,
roles, fit and its 409s, the swap (desired document moved and pushed, old device replaced, its
credentials revoked, fittings, a broadcast retargeted, an alert resolved, audit), idempotence,
history and the month report stitched across the two devices; the ingest refusing a replaced
device's messages."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from fleet.assets.models import Fitting
from fleet.auth.roles import Role
from fleet.broadcast.models import Broadcast, BroadcastVersion, Clip, Level
from fleet.models import AuditEntry, DeviceCredential, EventRecord, TelemetryRecord
from fleet.ops.models import Alert, AlertEvent, AlertRule, AlertState, Severity
from tests.support.device import ScriptedDevice
from tests.support.fleet import token_for
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

T0 = datetime(2026, 10, 10, 2, 0, tzinfo=UTC)  # 09:00 on 10 October in the city (FLEET_TIMEZONE)
PROGRAM = {"default": 0, "failsafe": 100, "rules": [{"steps": [{"sun": "set", "off": 0, "level": 100},
                                                               {"at": "23:00", "level": 50},
                                                               {"sun": "rise", "off": 0, "level": 0}]}]}
POLE = {"id": "pole-tan-phu-0042", "kind": "pole", "name": "Pole 42", "ward": "tan-phu",
        "address": "Phú Riềng Đỏ 12", "latitude": 11.535, "longitude": 106.883,
        "attributes": {"lamp_type": "LED", "lamp_w": 120}}


def as_role(fleet: httpx.AsyncClient, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=fleet.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=15)


async def test_validation_and_roles(fleet: httpx.AsyncClient) -> None:
    bad: list[dict[str, Any]] = [
        {**POLE, "id": "Pole_42"}, {**POLE, "id": "-pole"}, {**POLE, "id": "p" * 64}, {**POLE, "kind": "tree"},
        {**POLE, "latitude": 91}, {**POLE, "longitude": -180.5},
        {**POLE, "attributes": {f"k{i}": i for i in range(21)}},
        {**POLE, "attributes": {"lamp": {"nested": 1}}}, {**POLE, "attributes": {"Lamp-W": 1}},
        {**POLE, "attributes": {"lamp_type": "x" * 201}}, {**POLE, "attributes": {"lamp_w": [1, 2]}},
        {**POLE, "ward": "w" * 81}, {**POLE, "surprise": 1},
    ]
    for body in bad:
        answer = await fleet.post("/api/assets", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert "x" * 201 not in answer.text
    reader = as_role(fleet, await token_for(fleet, Role.READ_ONLY))
    technician = as_role(fleet, await token_for(fleet, Role.TECHNICIAN, "tech-anh"))
    async with reader, technician:
        assert (await reader.post("/api/assets", json=POLE)).status_code == 403
        made = await technician.post("/api/assets", json=POLE)
        assert made.status_code == 201, made.text
        assert made.json()["attributes"] == {"lamp_type": "LED", "lamp_w": 120}
        assert (await technician.post("/api/assets", json=POLE)).status_code == 409
        listed = await reader.get("/api/assets", params={"ward": "tan-phu", "kind": "pole"})
        assert [a["id"] for a in listed.json()] == [POLE["id"]] and listed.headers["X-Total-Count"] == "1"
        assert (await reader.get("/api/assets", params={"kind": "cabinet"})).json() == []
        assert (await reader.patch(f"/api/assets/{POLE['id']}", json={"name": "x"})).status_code == 403
        changed = await technician.patch(f"/api/assets/{POLE['id']}", json={"attributes": {"lamp_w": 90},
                                                                             "latitude": None})
        assert changed.status_code == 200 and changed.json()["latitude"] is None
        assert (await technician.patch(f"/api/assets/{POLE['id']}", json={"name": None})).status_code == 422
        assert (await reader.get("/api/assets/No_Such")).status_code == 422
        assert (await reader.get("/api/assets/no-such")).status_code == 404
        assert (await reader.delete(f"/api/assets/{POLE['id']}")).status_code == 403
        assert (await technician.delete(f"/api/assets/{POLE['id']}")).status_code == 204
    actions = await AuditEntry.filter(target=POLE["id"]).order_by("id").values_list("actor", "action")
    assert actions == [("tech-anh", "asset.create"), ("tech-anh", "asset.update"), ("tech-anh", "asset.delete")]


async def _device(fleet: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    made = await fleet.post("/api/devices", json={"id": device_id, "kind": "esp32"})
    assert made.status_code == 201, made.text
    issued = await fleet.post(f"/api/devices/{device_id}/credentials")
    assert issued.status_code == 200, issued.text
    return dict(issued.json()["mqtt"])


async def test_fit_swap_history_report(fleet: httpx.AsyncClient) -> None:
    await fleet.post("/api/assets", json=POLE)
    await fleet.post("/api/assets", json={"id": "pole-2", "kind": "pole"})
    pole = POLE["id"]
    for device_id in ("lamp-old", "lamp-new", "lamp-other"):
        await _device(fleet, device_id)
    assert (await fleet.post(f"/api/assets/{pole}/fit", json={"device_id": "nope-1"})).status_code == 404
    fitted = await fleet.post(f"/api/assets/{pole}/fit", json={"device_id": "lamp-old"})
    assert fitted.status_code == 200 and fitted.json()["device"]["id"] == "lamp-old"
    again = await fleet.post(f"/api/assets/{pole}/fit", json={"device_id": "lamp-other"})
    assert again.status_code == 409 and "carries device 'lamp-old'" in again.json()["detail"]
    elsewhere = await fleet.post("/api/assets/pole-2/fit", json={"device_id": "lamp-old"})
    assert elsewhere.status_code == 409 and f"fitted to asset {pole!r}" in elsewhere.json()["detail"]
    assert (await fleet.get("/api/devices/lamp-old")).json()["ward"] == "tan-phu"  # the asset's place

    # what follows the asset: the program, a broadcast naming the device, an alert
    put = await fleet.put("/api/devices/lamp-old/desired", json={"doc": {"light": PROGRAM}})
    assert put.status_code == 200, put.text
    clip = await Clip.create(title="t", source="tts", source_sha256="0" * 64, source_format="wav", source_bytes=1,
                             duration_ms=1000, created_by="t")
    broadcast = await Broadcast.create(title="b", clip=clip, level=Level.NORMAL,
                                       targets={"wards": [], "tags": [], "devices": ["lamp-old", "spk-9"]},
                                       start_local="2099-01-01T08:00:00", timezone="Asia/Ho_Chi_Minh",
                                       created_by="t", updated_by="t")
    rule = await AlertRule.filter(kind="offline").first()
    assert rule is not None
    now = datetime.now(UTC)
    alert = await Alert.create(rule=rule, kind="offline", device_id="lamp-old", severity=Severity.MAJOR,
                               live_key=f"{rule.id}:lamp-old", summary="offline", raised_at=now, last_true_at=now)
    # the old device has been on the pole for hours: its light telemetry (counters 10 -> 12 h) and a failure
    # (the pole's story is set in a fixed past month, T0 on: the report's month is then one whatever the clock)
    await Fitting.filter(asset_id=pole, device_id="lamp-old").update(fitted_at=T0)
    for i, burn in enumerate((10.0, 11.0, 12.0)):
        at = T0 + timedelta(hours=1 + i)
        await TelemetryRecord.create(device_id="lamp-old", ses=1, seq=i + 1, received_at=at, at=at, role="light",
                                     readings={"burn_h": burn, "energy_wh": burn * 100})
    await EventRecord.create(device_id="lamp-old", ses=1, seq=9, received_at=now, at=T0 + timedelta(hours=2),
                             event_id="f1", type="lamp_failure", phase="start", category="other", data={})

    refused = await fleet.post(f"/api/assets/{pole}/swap", json={"new_device_id": "lamp-old"})
    assert refused.status_code == 200 and refused.json()["already_done"]  # the device it carries: nothing to do
    technician = as_role(fleet, await token_for(fleet, Role.TECHNICIAN, "tech-binh"))
    async with technician:
        swapped = await technician.post(f"/api/assets/{pole}/swap", json={"new_device_id": "lamp-new"})
    assert swapped.status_code == 200, swapped.text
    result = swapped.json()
    assert (result["old_device_id"], result["new_device_id"], result["pushed"], result["already_done"]) == (
        "lamp-old", "lamp-new", True, False)
    assert result["broadcasts_retargeted"] == [broadcast.id] and result["alerts_resolved"] == [alert.id]
    new = (await fleet.get("/api/devices/lamp-new/desired")).json()
    assert new["doc"] == {"light": PROGRAM} and new["version"] == result["desired_version"] == 1
    old = (await fleet.get("/api/devices/lamp-old")).json()
    assert old["status"] == "replaced"
    assert await DeviceCredential.filter(device_id="lamp-old", revoked_at=None).count() == 0
    assert await DeviceCredential.filter(device_id="lamp-new", revoked_at=None).count() == 1
    await broadcast.refresh_from_db()
    assert broadcast.targets["devices"] == ["lamp-new", "spk-9"] and broadcast.version == 2
    assert await BroadcastVersion.filter(broadcast_id=broadcast.id, version=2).exists()
    await alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.resolved_by == "tech-binh"
    assert (await AlertEvent.filter(alert_id=alert.id, action="resolved").first()).detail == {"reason": "replaced"}
    fits = await Fitting.filter(asset_id=pole).order_by("id").values_list("device_id", "reason", "removed_at")
    assert [(d, r) for d, r, _ in fits] == [("lamp-old", "swap"), ("lamp-new", "swap")]
    assert fits[0][2] is not None and fits[1][2] is None
    audit = await AuditEntry.filter(action="asset.swap", target=pole).first()
    assert audit is not None and audit.actor == "tech-binh" and audit.detail["old_device_id"] == "lamp-old"
    assert await AuditEntry.filter(action="device.credentials.revoke", target="lamp-old").exists()

    # asked again (a technician's retry after a lost answer): done already, nothing changes
    retry = await fleet.post(f"/api/assets/{pole}/swap", json={"new_device_id": "lamp-new"})
    assert retry.status_code == 200 and retry.json()["already_done"] and retry.json()["old_device_id"] == "lamp-old"
    assert await Fitting.filter(asset_id=pole).count() == 2
    # the replaced device cannot be fitted, enrolled again or given credentials
    assert (await fleet.post("/api/assets/pole-2/fit", json={"device_id": "lamp-old"})).status_code == 409
    assert (await fleet.post("/api/devices/lamp-old/credentials")).status_code == 409
    assert (await fleet.put("/api/devices/lamp-old/desired", json={"doc": {}})).status_code == 409
    # the swap is put at T0 + 4 h; the new device runs on, counters from its own zero
    swapped_at = T0 + timedelta(hours=4)
    await Fitting.filter(asset_id=pole, device_id="lamp-old").update(removed_at=swapped_at)
    await Fitting.filter(asset_id=pole, device_id="lamp-new").update(fitted_at=swapped_at)
    for i, burn in enumerate((0.0, 2.0)):
        at = swapped_at + timedelta(hours=i + 1)
        await TelemetryRecord.create(device_id="lamp-new", ses=1, seq=i + 1, received_at=at, at=at, role="light",
                                     readings={"burn_h": burn, "energy_wh": burn * 100})

    history = (await fleet.get(f"/api/assets/{pole}/history", params={
        "source": "telemetry", "field": "burn_h", "role": "light",
        "from": (T0 - timedelta(hours=1)).isoformat(), "to": (T0 + timedelta(hours=8)).isoformat()})).json()
    assert [p["device_id"] for p in history["pieces"]] == ["lamp-old", "lamp-new"]
    assert history["pieces"][0]["end"] == history["pieces"][1]["start"] and history["gaps"] == []
    assert [e["type"] for e in history["pieces"][0]["events"]] == ["lamp_failure"]
    assert {p["device_id"] for p in history["points"]} == {"lamp-old", "lamp-new"}
    bad = await fleet.get(f"/api/assets/{pole}/history", params={"source": "telemetry", "field": "nope"})
    assert bad.status_code == 422

    report = (await fleet.get(f"/api/assets/{pole}/report", params={"month": "2026-10"})).json()
    assert [(d["device_id"], d["burn_h"], d["energy_kwh"], d["lamp_failures"]) for d in report["devices"]] == [
        ("lamp-old", 2.0, 0.2, 1), ("lamp-new", 2.0, 0.2, 0)]
    assert report["totals"] == {"burn_h": 4.0, "energy_kwh": 0.4, "lamp_failures": 1, "devices": 2}
    # one program on both devices, no time without a device: the pole's program had no gap
    assert report["devices"][0]["program"] == report["devices"][1]["program"] is not None
    assert report["program_continuous"] and report["gaps"] == []
    assert (await fleet.get(f"/api/assets/{pole}/report", params={"month": "2026-13"})).status_code == 422
    assert (await fleet.delete(f"/api/assets/{pole}")).status_code == 409


async def test_replaced_device_messages_refused(fleet: httpx.AsyncClient, mosquitto: Mosquitto) -> None:
    """A swap whose first try died after the broker step finishes when asked again; the ingest then
    refuses the replaced device's messages like a decommissioned one's."""
    await fleet.post("/api/assets", json=POLE)
    await _device(fleet, "lamp-a")
    await _device(fleet, "lamp-b")
    await fleet.post(f"/api/assets/{POLE['id']}/fit", json={"device_id": "lamp-a"})
    # a first swap that died after revoking the old credentials (step 2): asked again, it finishes
    assert (await fleet.post("/api/devices/lamp-a/credentials/revoke")).json() == {"revoked": 1}
    finished = await fleet.post(f"/api/assets/{POLE['id']}/swap", json={"new_device_id": "lamp-b"})
    assert finished.status_code == 200 and finished.json()["credentials_revoked"] == 0
    assert not finished.json()["already_done"] and finished.json()["desired_version"] is None
    dev = ScriptedDevice(mosquitto.port, "lamp-a", ses=1)  # an open test broker: the old board still talking
    try:
        dev.health(seq=0)

        async def refused() -> dict[str, Any] | None:
            stats = (await fleet.get("/api/ingest/stats")).json()
            return stats if stats["rejected"].get("replaced") else None

        await async_wait_for(refused, what="the replaced device's message refused")
        assert (await fleet.get("/api/devices/lamp-a/health")).json() == []
        assert (await fleet.post("/api/devices/lamp-a/commands", json={"name": "ping"})).status_code == 409
    finally:
        dev.close()


async def test_swap_while_the_broker_is_down_then_again(fleet: httpx.AsyncClient, mosquitto: Mosquitto) -> None:
    """The fleet's broker link down at the push (after the transaction): the swap stands, `pushed` is
    false; asked again once the link is back, it answers `already_done` and publishes the document."""
    await fleet.post("/api/assets", json=POLE)
    await _device(fleet, "lamp-c")
    await _device(fleet, "lamp-d")
    await fleet.post(f"/api/assets/{POLE['id']}/fit", json={"device_id": "lamp-c"})
    await fleet.put("/api/devices/lamp-c/desired", json={"doc": {"light": PROGRAM}})
    runtime = fleet.app.state.runtime  # type: ignore[attr-defined]
    mosquitto.stop()
    try:
        async def link_down() -> bool:
            return not runtime.link.connected.is_set()

        await async_wait_for(link_down, what="the fleet's link down")
        down = (await fleet.post(f"/api/assets/{POLE['id']}/swap", json={"new_device_id": "lamp-d"})).json()
        assert (down["pushed"], down["already_done"], down["desired_version"]) == (False, False, 1)
        assert "ask the same swap again" in down["note"]
        assert (await fleet.get("/api/devices/lamp-c")).json()["status"] == "replaced"
    finally:
        mosquitto.start()

    async def link_up() -> bool:
        return bool(runtime.link.connected.is_set())

    await async_wait_for(link_up, timeout=60, what="the fleet's link back")
    watcher = ScriptedDevice(mosquitto.port, "lamp-d", ses=1, will=False)  # subscribes as the new board would
    try:
        again = (await fleet.post(f"/api/assets/{POLE['id']}/swap", json={"new_device_id": "lamp-d"})).json()
        assert (again["pushed"], again["already_done"], again["old_device_id"]) == (True, True, "lamp-c")
        assert again["note"] == "already done; the document was sent again"

        async def delivered() -> bool:  # the broker lost nothing of it: the board would get the program now
            return any(topic.endswith("/state/desired") and body.get("version") == 1 and body.get("doc") == {
                "light": PROGRAM} for topic, body in list(watcher.received))

        await async_wait_for(delivered, what="the moved document on the new device's topic")
    finally:
        watcher.close()
