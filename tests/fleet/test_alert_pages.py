"""The alert pages (issue 13 §2): `/alerts` open first by severity, grouped per ward and device,
filtered; `/alerts/{id}` with its history; acknowledge, silence, unsilence and resolve as forms that
change the alert, record the person in its history and the audit log; a read-only person and a
cross-site form are refused (403). On SQLite and PostgreSQL (the ordering is SQL)."""

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fleet.auth.roles import Role
from fleet.models import AuditEntry, Device
from fleet.ops.models import Alert, AlertEvent, AlertRule, AlertState, Severity
from tests.fleet.ops_map_kit import browser, quiet_fleet, raise_alert
from tests.support.mosquitto import Mosquitto

ROW = re.compile(r'<tr class="alert-(\w+)" data-alert="(\d+)">')


@pytest.fixture
async def fleet(database_url: str, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with quiet_fleet(database_url, mosquitto.url) as http:
        yield http


async def _alerts() -> dict[str, Alert]:
    prefix = uuid.uuid4().hex[:6]
    await Device.bulk_create([Device(id=f"al-{prefix}-{n}", kind="pi", ward=ward)
                              for n, ward in enumerate(("tan-phu", "tan-phu", "tan-binh", "tan-binh", "tan-xuan"))])
    rule = await AlertRule.create(name=f"pages {prefix}", kind="temp_high", params={"max_c": 80})
    now = datetime.now(UTC)
    made = {}
    for name, n, severity, minutes in (("minor", 0, Severity.MINOR, 1), ("critical", 1, Severity.CRITICAL, 30),
                                       ("major_old", 2, Severity.MAJOR, 50), ("major_new", 3, Severity.MAJOR, 5),
                                       ("acked", 4, Severity.CRITICAL, 2)):
        made[name] = await raise_alert(rule, f"al-{prefix}-{n}", now - timedelta(minutes=minutes), severity,
                                       summary=f"temperature {name}")
    made["acked"].state, made["acked"].acknowledged_by = AlertState.ACKNOWLEDGED, "someone"
    await made["acked"].save()
    other = await AlertRule.create(name=f"pages {prefix} 2", kind="offline", params={"for_s": 60})
    made["resolved"] = await raise_alert(other, f"al-{prefix}-0", now - timedelta(hours=3), Severity.CRITICAL)
    made["resolved"].state, made["resolved"].live_key = AlertState.RESOLVED, None
    await made["resolved"].save()
    return made


async def test_the_list_and_the_actions(fleet: httpx.AsyncClient) -> None:
    made = await _alerts()
    async with browser(fleet, Role.OPS) as ops, browser(fleet, Role.READ_ONLY) as reader:
        ops_name = ops.headers["X-Test-User"]
        page = await reader.get("/alerts")
        assert page.status_code == 200, page.text
        ids = {a.id: name for name, a in made.items()}
        order = [ids[int(i)] for _, i in ROW.findall(page.text) if int(i) in ids]
        assert order == ["critical", "major_new", "major_old", "minor", "acked"]
        assert 'data-ward="tan-binh"' in page.text and f'data-device="{made["critical"].device_id}"' in page.text
        everything = await reader.get("/alerts", params={"state": "all"})
        assert [ids[int(i)] for _, i in ROW.findall(everything.text) if int(i) in ids][-1] == "resolved"
        narrowed = await reader.get("/alerts", params={"ward": "tan-binh", "severity": "major", "state": "open"})
        assert [ids[int(i)] for _, i in ROW.findall(narrowed.text) if int(i) in ids] == ["major_new", "major_old"]
        assert (await reader.get("/alerts", params={"severity": "loud"})).status_code == 422

        alert = made["critical"]
        detail = await reader.get(f"/alerts/{alert.id}")
        assert detail.status_code == 200 and "temperature critical" in detail.text and "rule engine" in detail.text
        assert 'id="actions"' not in detail.text  # read-only: no buttons
        # read-only: refused, nothing changed
        refused = await reader.post(f"/alerts/{alert.id}/ack")
        assert refused.status_code == 403 and "read_only" in refused.text
        assert (await Alert.get(id=alert.id)).state == AlertState.OPEN

        # acknowledge, silence, unsilence, resolve: each changes the alert and names the person
        assert 'id="ack-button"' in (await ops.get(f"/alerts/{alert.id}")).text
        done = await ops.post(f"/alerts/{alert.id}/ack", follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == f"/alerts/{alert.id}?done=acknowledged"
        row = await Alert.get(id=alert.id)
        assert (row.state, row.acknowledged_by) == (AlertState.ACKNOWLEDGED, ops_name)
        again = await ops.post(f"/alerts/{alert.id}/ack")
        assert again.status_code == 409 and f"already acknowledged by {ops_name}" in again.text

        before = datetime.now(UTC)
        assert (await ops.post(f"/alerts/{alert.id}/silence", data={"hours": "4"})).status_code == 200
        row = await Alert.get(id=alert.id)
        assert row.silenced_by == ops_name and row.silenced_until is not None
        assert timedelta(hours=4) <= row.silenced_until - before < timedelta(hours=4, minutes=1)
        page = await ops.get(f"/alerts/{alert.id}")
        assert 'id="alert-silenced"' in page.text and 'id="unsilence-button"' in page.text
        past = await ops.post(f"/alerts/{alert.id}/silence", data={"hours": "", "until": "2020-01-01T08:00"})
        assert past.status_code == 422 and "past" in past.text
        junk = await ops.post(f"/alerts/{alert.id}/silence", data={"hours": "", "until": "soon"})
        assert junk.status_code == 422 and "must be a date and time" in junk.text
        assert (await ops.post(f"/alerts/{alert.id}/unsilence")).status_code == 200
        assert (await Alert.get(id=alert.id)).silenced_until is None
        resolved = await ops.post(f"/alerts/{alert.id}/resolve")
        assert resolved.status_code == 200 and 'id="done"' in resolved.text
        row = await Alert.get(id=alert.id)
        assert (row.state, row.resolved_by) == (AlertState.RESOLVED, ops_name)
        history = [(e.action, e.actor) for e in await AlertEvent.filter(alert_id=alert.id).order_by("id")]
        assert history == [("raised", ""), ("acknowledged", ops_name), ("silenced", ops_name),
                           ("unsilenced", ops_name), ("resolved", ops_name)]
        shown = (await ops.get(f"/alerts/{alert.id}")).text
        assert shown.count(f'<td class="actor">{ops_name}</td>') == 4 and 'id="actions"' not in shown
        audited = await AuditEntry.filter(actor=ops_name, target=str(alert.id)).values_list("action", flat=True)
        assert sorted(str(a) for a in audited) == ["alert.acknowledge", "alert.resolve", "alert.silence",
                                                   "alert.unsilence"]
        assert (await ops.get("/alerts/999999")).status_code == 404

        # a form posted from another origin: refused before it reaches the page
        base = str(fleet.base_url).rstrip("/")
        async with httpx.AsyncClient(base_url=base, cookies=ops.cookies,
                                     headers={"Origin": "http://evil.example"}) as other_site:
            crossed = await other_site.post(f"/alerts/{made['minor'].id}/ack")
            assert crossed.status_code == 403 and "cross-site" in crossed.text
        assert (await Alert.get(id=made["minor"].id)).state == AlertState.OPEN
