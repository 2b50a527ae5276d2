"""The rule and channel pages (issue 13 §2-3): list, create and edit through the forms, checked by
the API's own body models and route functions (a bad parameter, URL or address is refused with the
API's reason and nothing is saved); the webhook secret never shown back and kept when left empty;
a read-only person refused (403)."""

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleet.auth.roles import Role
from fleet.ops.models import AlertRule, NotificationChannel
from tests.fleet.ops_map_kit import browser, quiet_fleet
from tests.support.mosquitto import Mosquitto


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with quiet_fleet(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url) as http:
        yield http


async def test_rules_and_channels_through_the_forms(fleet: httpx.AsyncClient) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    async with browser(fleet, Role.OPS) as ops, browser(fleet, Role.READ_ONLY) as reader:
        ops_name = ops.headers["X-Test-User"]
        # a channel first, so a rule can name it
        made = await ops.post("/channels/new", data={"kind": "webhook", "name": "ioc-hook", "url":
                                                     "https://ioc.example/hook", "secret": secret,
                                                     "min_severity": "major", "rate_per_hour": "10", "enabled": "yes"})
        assert made.status_code == 200 and 'id="done"' in made.text, made.text
        hook = await NotificationChannel.get(name="ioc-hook")
        assert (hook.target, hook.secret, hook.min_severity.value, hook.rate_per_hour, hook.updated_by) == (
            {"url": "https://ioc.example/hook"}, secret, "major", 10, ops_name)
        assert secret not in made.text and "(set: leave empty to keep it)" in made.text
        edited = await ops.post(f"/channels/{hook.id}", data={"name": "ioc-hook", "url": "https://ioc.example/v2",
                                                              "secret": "", "min_severity": "minor",
                                                              "rate_per_hour": "30"})
        assert edited.status_code == 200 and 'id="done"' in edited.text
        hook = await NotificationChannel.get(id=hook.id)
        assert (hook.target["url"], hook.secret, hook.rate_per_hour, hook.enabled) == (
            "https://ioc.example/v2", secret, 30, False)
        bad = await ops.post("/channels/new", data={"kind": "webhook", "name": "bad-hook", "url": "ftp://x",
                                                    "secret": secret, "min_severity": "major", "rate_per_hour": "10"})
        assert bad.status_code == 422 and "http:// or https://" in bad.text and secret not in bad.text
        mail = await ops.post("/channels/new", data={"kind": "email", "name": "ops-mail",
                                                     "to": "ops@ioc.example\nnot-an-address",
                                                     "min_severity": "warning", "rate_per_hour": "20"})
        assert mail.status_code == 422 and "recipient 2 is not an e-mail address" in mail.text
        assert not await NotificationChannel.filter(name__in=["bad-hook", "ops-mail"]).exists()
        listing = await reader.get("/channels")
        assert listing.status_code == 200 and "https://ioc.example/v2" in listing.text and secret not in listing.text

        # rules: the builtins listed; a new one with the kind's parameters; a bad parameter refused
        rules = await reader.get("/rules")
        assert rules.status_code == 200 and "camera fps low" in rules.text and 'id="new-rule"' not in rules.text
        form = await ops.get("/rules/new", params={"kind": "flapping"})
        assert 'name="param.changes"' in form.text and 'name="param.window_s"' in form.text
        refused = await ops.post("/rules/new", data={"kind": "flapping", "name": "ward flaps", "severity": "critical",
                                                     "param.changes": "1", "param.window_s": "600"})
        assert refused.status_code == 422 and "changes" in refused.text and "greater than or equal to 2" in refused.text
        created = await ops.post("/rules/new", data={"kind": "flapping", "name": "ward flaps", "severity": "critical",
                                                     "param.changes": "4", "param.window_s": "600", "ward": "tan-phu",
                                                     "channels": "ioc-hook", "enabled": "yes"})
        assert created.status_code == 200 and 'id="done"' in created.text
        rule = await AlertRule.get(name="ward flaps")
        assert (rule.kind, rule.severity.value, rule.params, rule.ward, rule.channels, rule.enabled,
                rule.updated_by) == ("flapping", "critical", {"changes": 4, "window_s": 600}, "tan-phu",
                                     ["ioc-hook"], True, ops_name)
        # a builtin: parameters, severity, enabled changed; its name kept
        offline = await AlertRule.get(name="offline", builtin=True)
        saved = await ops.post(f"/rules/{offline.id}", data={"name": "renamed", "severity": "critical",
                                                             "param.for_s": "120"})
        assert saved.status_code == 200 and 'id="done"' in saved.text
        offline = await AlertRule.get(id=offline.id)
        assert (offline.name, offline.severity.value, offline.params, offline.enabled) == (
            "offline", "critical", {"for_s": 120}, False)

        # read-only: may look, not change
        assert (await reader.get(f"/rules/{rule.id}")).status_code == 200
        for path, data in ((f"/rules/{rule.id}", {"severity": "minor"}), ("/rules/new", {"kind": "offline"}),
                           (f"/channels/{hook.id}", {"name": "x"}), (f"/channels/{hook.id}/test", {})):
            answer = await reader.post(path, data=data)
            assert answer.status_code == 403, path
        assert (await AlertRule.get(id=rule.id)).severity.value == "critical"
