"""The channels API (/api/ops/channels) on the real fleet (SQLite): the secret is write-only, bad
input is a 4xx saying what is wrong, READ lists and ALERTS changes, a test message reaches a real
receiver (checked with the standardwebhooks verifier) and the SMTP server, and the ops worker's
`notify` part (fleet/ops/service.py) sends an alert's change."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from fleet.auth.roles import Role
from fleet.models import AuditEntry
from fleet.ops import webhook_sign
from fleet.ops.models import AlertRule, Notification
from fleet.runtime import Runtime
from tests.fleet.notify_kit import Hook, Mailbox, raise_alerts, smtp_server, webhook_receiver
from tests.support.fleet import fleet_settings, running_fleet, token_for
from tests.support.mosquitto import Mosquitto, free_port

WARD = "Phường 3"


@pytest.fixture
async def setup(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[tuple[httpx.AsyncClient, Mailbox, Hook]]:
    with smtp_server() as box, webhook_receiver() as hook:
        settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url, smtp_host=box.host,
                                  smtp_port=box.port, smtp_starttls=False, smtp_from="ioc@example.org",
                                  ops_tick_s=300)  # the test runs the notifier's ticks itself
        async with running_fleet(settings) as http:
            yield http, box, hook


async def test_channels_api(setup: tuple[httpx.AsyncClient, Mailbox, Hook]) -> None:
    http, box, hook = setup
    secret = webhook_sign.new_secret()
    made = await http.post("/api/ops/channels", json={"name": "ioc-hook", "kind": "webhook",
                                                      "target": {"url": hook.url}, "secret": secret,
                                                      "min_severity": "major", "rate_per_hour": 30})
    assert made.status_code == 201, made.text
    web = made.json()
    assert web["secret_set"] is True and "secret" not in web and secret not in made.text
    mail = (await http.post("/api/ops/channels", json={"name": "ops-mail", "kind": "email",
                                                       "target": {"to": ["ops@example.org"]}})).json()
    assert mail["secret_set"] is False and mail["min_severity"] == "warning" and mail["rate_per_hour"] == 20

    listed = await http.get("/api/ops/channels")
    assert listed.status_code == 200 and listed.json()["total"] == 2 and secret not in listed.text
    assert [c["name"] for c in listed.json()["items"]] == ["ioc-hook", "ops-mail"]

    bad = {
        "ftp URL": {"name": "x", "kind": "webhook", "target": {"url": "ftp://h/x"}, "secret": secret},
        "no secret": {"name": "x", "kind": "webhook", "target": {"url": hook.url}},
        "bad secret": {"name": "x", "kind": "webhook", "target": {"url": hook.url}, "secret": "whsec_abc"},
        "user in URL": {"name": "x", "kind": "webhook", "target": {"url": "https://u:p@h/x"}, "secret": secret},
        "bad address": {"name": "x", "kind": "email", "target": {"to": ["ops at example.org"]}},
        "header injection": {"name": "x", "kind": "email", "target": {"to": ["a@b.org\r\nBcc: c@d.org"]}},
        "no recipient": {"name": "x", "kind": "email", "target": {"to": []}},
        "unknown severity": {"name": "x", "kind": "email", "target": {"to": ["a@b.org"]}, "min_severity": "urgent"},
        "zero rate": {"name": "x", "kind": "email", "target": {"to": ["a@b.org"]}, "rate_per_hour": 0},
        "unknown kind": {"name": "x", "kind": "sms", "target": {"to": ["a@b.org"]}},
        "bad name": {"name": "a b/c", "kind": "email", "target": {"to": ["a@b.org"]}},
    }
    for why, body in bad.items():
        answer = await http.post("/api/ops/channels", json=body)
        assert answer.status_code == 422, (why, answer.text)
        assert secret not in answer.text
    assert "http:// or https://" in (await http.post("/api/ops/channels", json=bad["ftp URL"])).json()["detail"]
    again = await http.post("/api/ops/channels", json={"name": "ops-mail", "kind": "email",
                                                       "target": {"to": ["a@b.org"]}})
    assert again.status_code == 409

    reader = {"Authorization": f"Bearer {await token_for(http, Role.READ_ONLY)}"}
    assert (await http.get("/api/ops/channels", headers=reader)).status_code == 200
    assert (await http.get(f"/api/ops/channels/{web['id']}", headers=reader)).status_code == 200
    for call in (http.post("/api/ops/channels", headers=reader, json={"name": "y", "kind": "email",
                                                                     "target": {"to": ["a@b.org"]}}),
                 http.patch(f"/api/ops/channels/{web['id']}", headers=reader, json={"enabled": False}),
                 http.post(f"/api/ops/channels/{web['id']}/test", headers=reader),
                 http.delete(f"/api/ops/channels/{web['id']}", headers=reader)):
        assert (await call).status_code == 403

    # test messages: a signed webhook the reference verifier accepts, an e-mail that arrives
    tested = await http.post(f"/api/ops/channels/{web['id']}/test")
    assert tested.status_code == 200 and tested.json() == {"ok": True, "detail": "HTTP 204 from 127.0.0.1"}
    headers, body = hook.calls[-1]
    assert Webhook(secret).verify(body, headers)["type"] == "channel.test"
    tested = await http.post(f"/api/ops/channels/{mail['id']}/test")
    assert tested.json()["ok"] is True and "1 recipient" in tested.json()["detail"]
    assert "ops-mail" in str(box.received[-1]["Subject"])
    nobody = f"http://127.0.0.1:{free_port()}/x"
    moved = await http.patch(f"/api/ops/channels/{web['id']}", json={"target": {"url": nobody}})
    assert moved.status_code == 200
    failed = (await http.post(f"/api/ops/channels/{web['id']}/test")).json()
    assert failed["ok"] is False and "127.0.0.1" in failed["detail"] and secret not in failed["detail"]

    # a rule names the channel: a rename follows into the rule; a delete is refused until it is taken out
    rule = await AlertRule.create(name="api-rule", kind="offline", channels=["ioc-hook", "ops-mail"])
    renamed = await http.patch(f"/api/ops/channels/{web['id']}", json={"name": "city-hook", "secret": secret,
                                                                      "target": {"url": hook.url}})
    assert renamed.status_code == 200 and renamed.json()["name"] == "city-hook"
    assert (await AlertRule.get(id=rule.id)).channels == ["city-hook", "ops-mail"]
    assert (await http.patch(f"/api/ops/channels/{web['id']}", json={"name": "ops-mail"})).status_code == 409
    assert (await http.patch(f"/api/ops/channels/{web['id']}", json={"kind": "email"})).status_code == 422
    unchanged = await http.patch(f"/api/ops/channels/{web['id']}", json={"name": None, "enabled": None})
    assert unchanged.status_code == 200 and unchanged.json()["enabled"] is True  # null: no change
    assert (await http.patch(f"/api/ops/channels/{web['id']}", json={"secret": None})).status_code == 422
    refused = await http.delete(f"/api/ops/channels/{mail['id']}")
    assert refused.status_code == 409 and "api-rule" in refused.json()["detail"]
    audits = [str(a.detail) for a in await AuditEntry.filter(action__startswith="ops.channel.")]
    assert audits and not any(secret in a for a in audits)

    # the ops worker's notify part sends a raised alert of the rule
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.ops is not None
    parts = dict(runtime.ops.parts)
    assert [name for name, _ in runtime.ops.parts].index("notify") > [n for n, _ in runtime.ops.parts].index("alerts")
    now = datetime.now(UTC)
    calls, mails = len(hook.calls), len(box.received)
    await raise_alerts(await AlertRule.get(id=rule.id), ["lamp-9"], WARD, now)
    await parts["notify"](now)
    assert len(hook.calls) == calls + 1 and len(box.received) == mails + 1
    assert "lamp-9" in str(box.received[-1]["Subject"])
    detail = (await http.get(f"/api/ops/channels/{web['id']}")).json()
    assert detail["outbox"]["sent_last_hour"] == 1 and detail["recent"][0]["state"] == "sent"
    assert await Notification.filter(state="sent").count() == 2

    await http.patch(f"/api/ops/channels/{mail['id']}", json={"enabled": False})
    rule.channels = ["city-hook"]
    await rule.save()
    assert (await http.delete(f"/api/ops/channels/{mail['id']}")).status_code == 204
    assert (await http.get("/api/ops/channels")).json()["total"] == 1
