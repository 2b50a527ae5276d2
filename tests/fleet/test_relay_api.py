"""The relay's API (/api/relay; docs/relay.md, "API") on a running fleet (SQLite): endpoints and routes
created, changed and refused with clear 4xx; the signing secret shown once (creation, rotation) and
the MQTT password never; replay and enable on the rows; deliveries paged newest first; admin only
(ops, ioc_operator and read_only get 403, nobody 401); every change audited."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.auth.roles import Role
from fleet.models import AuditEntry
from fleet.ops.webhook_sign import secret_key
from fleet.relay.models import DeliveryStatus, RelayDelivery, RelayEndpoint
from fleet.runtime import Runtime
from tests.support.fleet import fleet_settings, running_fleet, token_for
from tests.support.mosquitto import Mosquitto


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    # the route table's own reload every 600 s: a change shows in it only because the API reloads it
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url, relay_routes_reload_s=600)
    async with running_fleet(settings) as http:
        yield http


def detail(answer: httpx.Response) -> str:
    body = answer.json()["detail"]
    return body if isinstance(body, str) else " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in body)


async def dead_letters(endpoint_id: int, device: str, n: int, start: int = 0) -> list[RelayDelivery]:
    now = datetime.now(UTC)
    rows = []
    for i in range(start, start + n):
        rows.append(await RelayDelivery.create(
            endpoint_id=endpoint_id, device_id=device, message_id=f"msg_{device}{i:04d}",
            payload={"type": "device.event", "data": {"event": {"type": "motion", "phase": "start", "at": "x"}}},
            status=DeliveryStatus.DEAD, attempts=15, next_at=now, created_at=now - timedelta(minutes=n - i),
            last_status=503, last_error="503 Service Unavailable", done_at=now))
    return rows


async def test_endpoints_crud_secret_once_and_validation(fleet: httpx.AsyncClient) -> None:
    http = fleet
    made = await http.post("/api/relay/endpoints", json={"name": "ioc-wall", "kind": "webhook",
                                                         "url": "https://ioc.example/hook", "max_attempts": 5})
    assert made.status_code == 201, made.text
    hook = made.json()
    assert hook["secret"].startswith("whsec_") and len(secret_key(hook["secret"])) == 32
    assert (hook["enabled"], hook["max_attempts"], hook["pending"], hook["dead"], hook["topic"]) == (
        True, 5, 0, 0, None)
    stored = await RelayEndpoint.get(id=hook["id"])
    assert stored.secret == hook["secret"] and stored.updated_by == "admin-test"
    # never again: not in the endpoint, not in the list, not in the audit
    shown = await http.get(f"/api/relay/endpoints/{hook['id']}")
    listed = await http.get("/api/relay/endpoints")
    assert "secret" not in shown.json() and hook["secret"] not in shown.text + listed.text
    assert [e["name"] for e in listed.json()["items"]] == ["ioc-wall"]

    mqtt = await http.post("/api/relay/endpoints", json={
        "name": "ioc-broker", "kind": "mqtt", "url": "mqtts://broker.ioc.example:8883", "username": "fleet",
        "password": "s3cret-pass", "topic": "city/{ward}/{device}/{type}/{phase}"})
    assert mqtt.status_code == 201, mqtt.text
    assert mqtt.json()["password_set"] is True and "s3cret-pass" not in mqtt.text
    default_topic = await http.post("/api/relay/endpoints", json={"name": "plain", "kind": "mqtt",
                                                                  "url": "mqtt://127.0.0.1:1883"})
    assert default_topic.json()["topic"] == "ioc/events/{ward}/{device}/{type}"

    refused: dict[str, tuple[dict[str, Any], str]] = {
        "ftp url": ({"kind": "webhook", "url": "ftp://ioc.example/x"}, "http:// or https://"),
        "webhook credentials": ({"kind": "webhook", "url": "https://u:p@ioc.example/"}, "no credentials in the URL"),
        "mqtt credentials": ({"kind": "mqtt", "url": "mqtt://u:p@broker:1883"}, "no credentials in the URL"),
        "mqtt no port": ({"kind": "mqtt", "url": "mqtt://broker"}, "names its port"),
        "mqtt https": ({"kind": "mqtt", "url": "https://broker:1883"}, "mqtt://host:port"),
        "mqtt path": ({"kind": "mqtt", "url": "mqtt://broker:1883/x"}, "only mqtt(s)://host:port"),
        "bad placeholder": ({"kind": "mqtt", "url": "mqtt://b:1883", "topic": "a/{secret}"}, "placeholders are only"),
        "format spec": ({"kind": "mqtt", "url": "mqtt://b:1883", "topic": "a/{ward!r}"}, "placeholders are only"),
        "wildcard": ({"kind": "mqtt", "url": "mqtt://b:1883", "topic": "a/+/{ward}"}, "no wildcard"),
        "hash": ({"kind": "mqtt", "url": "mqtt://b:1883", "topic": "a/#"}, "no wildcard"),
        "braces": ({"kind": "mqtt", "url": "mqtt://b:1883", "topic": "a/{ward"}, "braces do not pair"),
        "empty level": ({"kind": "mqtt", "url": "mqtt://b:1883", "topic": "a//b"}, "no empty level"),
        "webhook topic": ({"kind": "webhook", "url": "https://x.example", "topic": "a/b"}, "has no topic"),
        "ca on mqtt": ({"kind": "mqtt", "url": "mqtt://b:1883", "ca_pem": "x"}, "for an mqtts://"),
        "ca not pem": ({"kind": "mqtt", "url": "mqtts://b:8883", "ca_pem": "nonsense"}, "not a PEM certificate"),
        "retry bounds": ({"kind": "webhook", "url": "https://x.example", "retry_base_s": 60, "retry_max_s": 10},
                         "retry_max_s is at least retry_base_s"),
        "timeout": ({"kind": "webhook", "url": "https://x.example", "timeout_s": 0}, "greater than or equal to 0.5"),
        "secret given": ({"kind": "webhook", "url": "https://x.example", "secret": "whsec_x"}, "Extra inputs"),
    }
    for case, (body, message) in refused.items():
        answer = await http.post("/api/relay/endpoints", json={"name": f"bad-{len(case)}", **body})
        assert answer.status_code == 422 and message in detail(answer), (case, answer.text)
    taken = await http.post("/api/relay/endpoints", json={"name": "ioc-wall", "kind": "webhook",
                                                          "url": "https://other.example"})
    assert taken.status_code == 409 and "taken" in detail(taken)
    assert await RelayEndpoint.all().count() == 3

    # PATCH: checked as a whole; password write-only, removed by null; the kind stays
    patched = await http.patch(f"/api/relay/endpoints/{mqtt.json()['id']}", json={"topic": "ioc/{device}",
                                                                                  "password": None})
    assert patched.status_code == 200 and patched.json()["password_set"] is False, patched.text
    assert (await RelayEndpoint.get(id=mqtt.json()["id"])).password is None
    cases: tuple[tuple[dict[str, Any], int, str], ...] = (({"url": "https://x.example"}, 422, "mqtt://host:port"),
                                  ({"topic": "x/#"}, 422, "no wildcard"),
                                  ({"kind": "webhook"}, 422, "Extra inputs"),
                                  ({"name": None}, 422, "name cannot be null"),
                                  ({}, 422, "nothing to update"),
                                  ({"name": "ioc-wall"}, 409, "taken"))
    for body, status, message in cases:
        answer = await http.patch(f"/api/relay/endpoints/{mqtt.json()['id']}", json=body)
        assert answer.status_code == status and message in detail(answer), (body, answer.text)
    assert (await http.patch("/api/relay/endpoints/999", json={"name": "x"})).status_code == 404

    # rotation: a new secret once; the old one kept for previous_valid_s (default 1 day, body optional)
    rotated = await http.post(f"/api/relay/endpoints/{hook['id']}/rotate")
    assert rotated.status_code == 200 and rotated.json()["secret"] != hook["secret"]
    row = await RelayEndpoint.get(id=hook["id"])
    assert (row.secret, row.previous_secret) == (rotated.json()["secret"], hook["secret"])
    assert row.previous_until is not None
    left = row.previous_until - datetime.now(UTC)
    assert timedelta(hours=23) < left <= timedelta(days=1)
    again = await http.post(f"/api/relay/endpoints/{hook['id']}/rotate", json={"previous_valid_s": 0})
    row = await RelayEndpoint.get(id=hook["id"])
    assert (row.secret, row.previous_secret, row.previous_until) == (again.json()["secret"], None, None)
    assert (await http.post(f"/api/relay/endpoints/{hook['id']}/rotate",
                            json={"previous_valid_s": -1})).status_code == 422
    assert rotated.json()["secret"] not in (await http.get(f"/api/relay/endpoints/{hook['id']}")).text

    # delete: its routes and deliveries go with it
    route = await http.post("/api/relay/routes", json={"name": "all-to-plain",
                                                       "endpoint_id": default_topic.json()["id"]})
    assert route.status_code == 201
    gone = await http.delete(f"/api/relay/endpoints/{default_topic.json()['id']}")
    assert gone.status_code == 204
    assert (await http.get(f"/api/relay/routes/{route.json()['id']}")).status_code == 404
    assert (await http.delete(f"/api/relay/endpoints/{default_topic.json()['id']}")).status_code == 404

    actions = [(a.action, a.target) for a in await AuditEntry.filter(action__startswith="relay.").order_by("id")]
    assert actions == [("relay.endpoint.create", "ioc-wall"), ("relay.endpoint.create", "ioc-broker"),
                       ("relay.endpoint.create", "plain"), ("relay.endpoint.update", "ioc-broker"),
                       ("relay.endpoint.rotate", "ioc-wall"), ("relay.endpoint.rotate", "ioc-wall"),
                       ("relay.route.create", "all-to-plain"), ("relay.endpoint.delete", "plain")]
    audited = " ".join(str(a.detail) for a in await AuditEntry.filter(action__startswith="relay."))
    for secret in (hook["secret"], rotated.json()["secret"], again.json()["secret"], "s3cret-pass"):
        assert secret not in audited


async def test_routes_validation_and_changes(fleet: httpx.AsyncClient) -> None:
    http = fleet
    hook = (await http.post("/api/relay/endpoints", json={"name": "wall", "kind": "webhook",
                                                          "url": "http://127.0.0.1:9/x"})).json()
    other = (await http.post("/api/relay/endpoints", json={"name": "warehouse", "kind": "webhook",
                                                           "url": "https://dw.example/in"})).json()
    made = await http.post("/api/relay/routes", json={
        "name": "security-q1", "endpoint_id": hook["id"], "categories": ["security", "security"],
        "phases": ["start", "once"], "wards": ["ben-nghe"], "device_kinds": ["pi"], "min_severity": "warning",
        "types": ["motion", "alarm"], "devices": ["pi-q1-0007"], "tags": ["junction"]})
    assert made.status_code == 201, made.text
    route = made.json()
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.relay is not None
    # the relay worker's route table reloaded by the change, not by its periodic reload
    assert [r.endpoint_id for r in runtime.relay.routes.rules] == [hook["id"]]
    assert (route["categories"], route["endpoint_name"], route["min_severity"], route["enabled"]) == (
        ["security"], "wall", "warning", True)
    for body, message in (({"categories": ["fire"]}, "security"), ({"phases": ["begin"]}, "start"),
                          ({"min_severity": "high"}, "critical"), ({"device_kinds": ["arduino"]}, "esp32"),
                          ({"types": ["Motion!"]}, "pattern"), ({"devices": ["NOT A DEVICE"]}, "pattern"),
                          ({"wards": [f"w{i}" for i in range(101)]}, "at most 100"),
                          ({"devices": ["d-1"] * 1001}, "at most 1000"),
                          ({"endpoint_id": 999}, "no relay endpoint 999"),
                          ({"endpoint_id": 0}, "greater than or equal to 1"),
                          ({"colour": "red"}, "Extra inputs")):
        answer = await http.post("/api/relay/routes", json={"name": "bad", "endpoint_id": hook["id"], **body})
        assert answer.status_code == 422 and message in detail(answer), (body, answer.text)
    assert (await http.post("/api/relay/routes", json={"name": "security-q1",
                                                      "endpoint_id": hook["id"]})).status_code == 409

    path = f"/api/relay/routes/{route['id']}"
    moved = await http.patch(path, json={"endpoint_id": other["id"], "min_severity": None, "enabled": False})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["endpoint_name"], moved.json()["min_severity"], moved.json()["enabled"],
            moved.json()["categories"]) == ("warehouse", None, False, ["security"])
    bad_changes: tuple[tuple[dict[str, Any], str], ...] = (
        ({"phases": None}, "phases cannot be null"), ({}, "nothing to update"),
        ({"endpoint_id": 999}, "no relay endpoint 999"), ({"phases": ["later"]}, "start"))
    for body, message in bad_changes:
        answer = await http.patch(path, json=body)
        assert answer.status_code == 422 and message in detail(answer), (body, answer.text)
    listed = await http.get("/api/relay/routes", params={"endpoint": other["id"]})
    assert [r["name"] for r in listed.json()["items"]] == ["security-q1"]
    assert (await http.get("/api/relay/routes", params={"endpoint": hook["id"]})).json()["total"] == 0
    assert (await http.delete(path)).status_code == 204
    assert runtime.relay.routes.rules == ()
    assert (await http.get(path)).status_code == 404
    actions = [a.action for a in await AuditEntry.filter(action__startswith="relay.route").order_by("id")]
    assert actions == ["relay.route.create", "relay.route.update", "relay.route.delete"]


async def test_deliveries_replay_enable_disable(fleet: httpx.AsyncClient) -> None:
    http = fleet
    hook = (await http.post("/api/relay/endpoints", json={"name": "wall", "kind": "webhook",
                                                          "url": "http://127.0.0.1:9/x"})).json()
    # disabled first: the relay worker sends nothing to it, so the rows stay as the API left them
    disabled = await http.post(f"/api/relay/endpoints/{hook['id']}/disable")
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "disabled by admin-test"
    dead = await dead_letters(hook["id"], "pi-a", 5) + await dead_letters(hook["id"], "pi-b", 2, start=5)
    listed = (await http.get("/api/relay/endpoints")).json()["items"][0]
    assert (listed["dead"], listed["pending"]) == (7, 0)

    # paged, newest first; filtered
    first = await http.get("/api/relay/deliveries", params={"endpoint": hook["id"], "limit": 3})
    page: dict[str, Any] = first.json()
    assert [d["id"] for d in page["items"]] == [r.id for r in reversed(dead)][:3]
    rest = await http.get("/api/relay/deliveries", params={"endpoint": hook["id"], "before": page["next_before"],
                                                           "limit": 10})
    assert [d["id"] for d in rest.json()["items"]] == [r.id for r in reversed(dead)][3:]
    assert rest.json()["next_before"] is None
    only_b = await http.get("/api/relay/deliveries", params={"device": "pi-b", "status": "dead"})
    assert {d["device_id"] for d in only_b.json()["items"]} == {"pi-b"} and len(only_b.json()["items"]) == 2
    assert page["items"][0]["event_type"] == "motion" and page["items"][0]["last_error"] == "503 Service Unavailable"
    for params in ({"status": "lost"}, {"limit": 0}, {"limit": 501}, {"device": "NO"}, {"endpoint": 0}):
        assert (await http.get("/api/relay/deliveries", params=params)).status_code == 422, params
    one = await http.get(f"/api/relay/deliveries/{dead[0].id}")
    assert one.status_code == 200 and one.json()["payload"]["type"] == "device.event"
    assert (await http.get("/api/relay/deliveries/99999")).status_code == 404

    # one replayed: pending, attempts reset, due now, the same message id
    replayed = await http.post(f"/api/relay/deliveries/{dead[0].id}/replay")
    assert replayed.status_code == 200, replayed.text
    row = await RelayDelivery.get(id=dead[0].id)
    assert (row.status, row.attempts, row.done_at, row.message_id) == (DeliveryStatus.PENDING, 0, None,
                                                                       dead[0].message_id)
    assert row.next_at <= datetime.now(UTC)
    not_dead = await http.post(f"/api/relay/deliveries/{dead[0].id}/replay")
    assert not_dead.status_code == 409 and "only a dead delivery" in detail(not_dead)
    # the rest of the endpoint's
    everything = await http.post(f"/api/relay/endpoints/{hook['id']}/replay")
    assert everything.json() == {"replayed": 6}
    assert await RelayDelivery.filter(endpoint_id=hook["id"], status=DeliveryStatus.PENDING, attempts=0).count() == 7
    assert (await http.post(f"/api/relay/endpoints/{hook['id']}/replay")).json() == {"replayed": 0}

    # a test message queued as a pending delivery
    queued = await http.post(f"/api/relay/endpoints/{hook['id']}/test")
    assert queued.status_code == 202
    test_row = await RelayDelivery.get(id=queued.json()["delivery_id"])
    assert (test_row.device_id, test_row.status, test_row.payload["data"]["event"]["type"]) == (
        "relay-test", DeliveryStatus.PENDING, "test")
    assert test_row.message_id.startswith("msg_") and len(test_row.message_id) == 30

    # enable resets the failure state
    await RelayEndpoint.filter(id=hook["id"]).update(consecutive_failures=12, consecutive_gone=1,
                                                     failing_since=datetime.now(UTC))
    enabled = await http.post(f"/api/relay/endpoints/{hook['id']}/enable")
    assert enabled.status_code == 200
    row_e = await RelayEndpoint.get(id=hook["id"])
    assert (row_e.enabled, row_e.disabled_reason, row_e.disabled_at, row_e.consecutive_failures,
            row_e.consecutive_gone, row_e.failing_since) == (True, None, None, 0, 0, None)
    for action in ("enable", "disable", "replay", "test", "rotate"):
        assert (await http.post(f"/api/relay/endpoints/999/{action}")).status_code == 404, action
    actions = [a.action for a in await AuditEntry.filter(action__startswith="relay.").order_by("id")]
    assert actions == ["relay.endpoint.create", "relay.endpoint.disable", "relay.delivery.replay",
                       "relay.endpoint.replay", "relay.endpoint.replay", "relay.endpoint.test",
                       "relay.endpoint.enable"]


async def test_only_admins(fleet: httpx.AsyncClient) -> None:
    http = fleet
    hook = (await http.post("/api/relay/endpoints", json={"name": "wall", "kind": "webhook",
                                                          "url": "https://ioc.example/x"})).json()
    route = (await http.post("/api/relay/routes", json={"name": "r", "endpoint_id": hook["id"]})).json()
    dead = (await dead_letters(hook["id"], "pi-a", 1))[0]
    calls: list[tuple[str, str, dict[str, Any] | None]] = [("GET", "/api/relay/endpoints", None),
             ("POST", "/api/relay/endpoints", {"name": "x", "kind": "webhook", "url": "https://x.example"}),
             ("GET", f"/api/relay/endpoints/{hook['id']}", None),
             ("PATCH", f"/api/relay/endpoints/{hook['id']}", {"name": "y"}),
             ("DELETE", f"/api/relay/endpoints/{hook['id']}", None)]
    calls += [("POST", f"/api/relay/endpoints/{hook['id']}/{a}", None)
              for a in ("rotate", "enable", "disable", "replay", "test")]
    calls += [("GET", "/api/relay/routes", None), ("POST", "/api/relay/routes", {"name": "z", "endpoint_id": 1}),
              ("GET", f"/api/relay/routes/{route['id']}", None),
              ("PATCH", f"/api/relay/routes/{route['id']}", {"name": "z"}),
              ("DELETE", f"/api/relay/routes/{route['id']}", None),
              ("GET", "/api/relay/deliveries", None), ("GET", f"/api/relay/deliveries/{dead.id}", None),
              ("POST", f"/api/relay/deliveries/{dead.id}/replay", None)]
    for role in (Role.OPS, Role.IOC_OPERATOR, Role.READ_ONLY, Role.TECHNICIAN):
        token = await token_for(http, role)
        for method, path, body in calls:
            answer = await http.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 403 and "needs 'relay'" in detail(answer), (role, method, path)
            assert hook.get("secret", "") not in answer.text
    async with httpx.AsyncClient(base_url=str(http.base_url)) as nobody:
        for method, path, body in calls:
            assert (await nobody.request(method, path, json=body)).status_code == 401, (method, path)
    assert (await RelayEndpoint.get(id=hook["id"])).name == "wall"
    assert (await RelayDelivery.get(id=dead.id)).status == DeliveryStatus.DEAD
