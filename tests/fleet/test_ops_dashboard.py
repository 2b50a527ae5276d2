"""The ops overview at `/` and a device's page with its history charts, and the history API
(docs/ops.md, "Dashboard"): real fleets, data through MQTT or the ingest, alerts as rows."""

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from fleet.models import Device, HealthRecord, TelemetryRecord
from fleet.ops.models import AlertState, Severity
from tests.fleet.ops_dashboard_kit import alert, env_node_history, ingest, message, page_client
from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


@pytest.fixture
async def fleet(database_url: str, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    """A fleet whose alert engine runs once at its start and not again within a test: the alerts
    here are rows as the engine would leave them, which its next turn would judge again."""
    async with running_fleet(fleet_settings(database_url, mosquitto.url, ops_tick_s=300)) as http:
        yield http


def _rows(html: str, table: str) -> list[tuple[str, str]]:
    """(state, device) of each row of one table of the overview, in order."""
    body = html.split(f'class="devices {table}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr class="state-([a-z-]+)" data-device="([a-z0-9-]+)"', body)


async def test_the_overview_puts_problems_first_and_pages_the_fleet(
        fleet: httpx.AsyncClient, mosquitto: Mosquitto, database_url: str) -> None:
    for device_id, ward, kind in (("cam-market-01", "tan-phu", "pi"), ("light-qt-0007", "tan-binh", "esp32"),
                                  ("speaker-tx-03", "tan-xuan", "esp32")):
        assert (await fleet.post("/api/devices", json={"id": device_id, "kind": kind, "ward": ward})).status_code == 201
    # 55 more lights registered in one ward, never heard from: the list must come in pages
    await Device.bulk_create([Device(id=f"light-pt-{i:04d}", kind="esp32", ward="phu-thinh", fw="0.2.0")
                              for i in range(55)])
    cam = ScriptedDevice(mosquitto.port, "cam-market-01", ses=2)
    cam.birth(roles=["camera"], fw="2.1.0")
    cam.health(cpu_pct=17.0, temp_c=51.2, queue=0)
    lamp = ScriptedDevice(mosquitto.port, "light-qt-0007", ses=9)
    lamp.birth(kind="esp32", roles=["light"], fw="0.1.0")
    lamp.health(heap_free=41232, rssi=-67)
    lamp.kill()  # offline by its will

    async def settled() -> bool:
        states = {d["id"]: d["state"] for d in (await fleet.get("/api/devices?limit=5&ward=tan-binh")).json()
                  + (await fleet.get("/api/devices?ward=tan-phu")).json()}
        return states == {"light-qt-0007": "offline", "cam-market-01": "online"}

    await async_wait_for(settled, what="the camera online, the lamp offline")
    now = datetime.now(UTC)
    await alert("light-qt-0007", "tan-binh", Severity.WARNING, AlertState.OPEN, now - timedelta(minutes=1),
                "heap low on light-qt-0007", kind="heap_low")
    await alert("light-qt-0007", "tan-binh", Severity.CRITICAL, AlertState.OPEN, now - timedelta(minutes=9),
                "light-qt-0007 offline for 5 min")
    await alert("cam-market-01", "tan-phu", Severity.MINOR, AlertState.ACKNOWLEDGED, now - timedelta(hours=2),
                "camera fps under 5", kind="camera_fps_low")
    await alert("cam-market-01", "tan-phu", Severity.MAJOR, AlertState.RESOLVED, now - timedelta(hours=5),
                "cam-market-01 offline for 5 min")

    async with page_client(fleet) as http:
        page = await http.get("/")
        assert page.status_code == 200
        html = page.text
        # open alerts, worst first; the resolved one is history, not a problem
        alerts = re.findall(r'<tr class="alert-sev-([a-z]+)" data-alert="\d+">', html)
        assert alerts == ["critical", "minor", "warning"]
        assert re.search(r'id="count-alerts">3<', html)
        assert re.search(r'data-severity="critical">critical 1<', html) and 'data-severity="major">major 0<' in html
        assert 'href="/alerts"' in html and 'href="/map"' in html and 'href="/devices/light-qt-0007"' in html
        assert _rows(html, "problem-devices") == [("offline", "light-qt-0007")]
        assert re.search(r'id="count-online">1<', html) and re.search(r'id="count-never-seen">56<', html)
        assert re.search(r'id="count-total">58<', html)
        # counts by ward (problems first), by kind, and the firmware in the field, all grouped in SQL
        wards = re.findall(r'<tr data-ward="([a-z-]*)">.*?<td>(\d+)</td><td>(\d+)</td><td>(?:<span[^>]*>)?(\d+)'
                           r'(?:</span>)?</td><td>(?:<span[^>]*>)?(\d+)', html)
        assert wards[0] == ("tan-binh", "1", "0", "0", "1")
        assert ("phu-thinh", "55", "0", "0", "0") in wards and ("tan-phu", "1", "1", "0", "0") in wards
        assert re.search(r'<tr data-kind="esp32"><td><a [^>]+>esp32</a></td><td>57</td>', html)
        assert '<tr data-fw="esp32/0.2.0"><td>esp32</td><td>0.2.0</td><td>55</td>' in html
        assert '<tr data-fw="pi/2.1.0"><td>pi</td><td>2.1.0</td><td>1</td>' in html
        # every device, 50 to a page, by ward then id
        first = _rows(html, "all-devices")
        assert len(first) == 50 and first[0] == ("never-seen", "light-pt-0000")
        assert 'page 1 of 2 (58)' in html
        second = _rows((await http.get("/?p=2")).text, "all-devices")
        assert len(second) == 8 and {d for _, d in first}.isdisjoint(d for _, d in second)
        assert ("online", "cam-market-01") in second and ("offline", "light-qt-0007") in second
        offline = _rows((await http.get("/?state=offline")).text, "all-devices")
        assert offline == [("offline", "light-qt-0007")]
        in_ward = _rows((await http.get("/?ward=tan-phu&kind=pi&state=")).text, "all-devices")
        assert in_ward == [("online", "cam-market-01")]
        assert (await http.get("/?p=99")).status_code == 200  # past the end: the last page
    cam.close()


async def test_the_history_api_answers_the_raw_rows_downsampled(fleet: httpx.AsyncClient, database_url: str) -> None:
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    await fleet.post("/api/devices", json={"id": "env-tp-01", "kind": "pi", "ward": "tan-phu"})
    stored = await env_node_history("env-tp-01", start, minutes=180, gap=range(60, 100))
    assert stored == 140

    async def history(**params: str | int) -> httpx.Response:
        return await fleet.get("/api/devices/env-tp-01/history", params=params)

    end = start + timedelta(hours=3)
    answer = await history(source="health", field="temp_c", **{"from": start.isoformat(), "to": end.isoformat()},
                           points=36)
    assert answer.status_code == 200, answer.text
    points = answer.json()["points"]
    # the same buckets computed here from the raw rows: 5-minute buckets, the 40 missing minutes empty
    rows = await HealthRecord.filter(device_id="env-tp-01").values_list("received_at", "data")
    buckets: dict[int, list[float]] = {}
    for at, data in rows:
        buckets.setdefault(int((at - start) / timedelta(minutes=5)), []).append(data["temp_c"])
    assert len(points) == len(buckets) == 28
    for point, (index, values) in zip(points, sorted(buckets.items()), strict=True):
        assert datetime.fromisoformat(point["at"]) == start + timedelta(minutes=5 * index)
        assert point["n"] == len(values)
        assert point["min"] == min(values) and point["max"] == max(values)
        assert abs(point["mean"] - sum(values) / len(values)) < 1e-9
    nested = await history(source="health", field="roles.env.fan_rpm", points=2)
    assert nested.status_code == 200 and sum(p["n"] for p in nested.json()["points"]) == 140

    pm = await history(source="telemetry", field="pm25", role="env", **{"from": start.isoformat(),
                                                                           "to": end.isoformat()}, points=6)
    readings = await TelemetryRecord.filter(device_id="env-tp-01", role="env").values_list("at", "readings")
    assert sum(p["n"] for p in pm.json()["points"]) == len(readings) == 28
    assert max(p["max"] for p in pm.json()["points"]) == max(r["pm25"] for _, r in readings)

    # what it refuses, and why
    for params, reason in (
            ({"source": "health", "field": "no_such"}, "no such numeric field in this device's health; it has:"),
            ({"source": "telemetry", "field": "temp_c", "role": "env"}, "it has: pm25"),
            ({"source": "health", "field": "temp_c", "from": end.isoformat(), "to": start.isoformat()},
             "'from' must be before 'to'"),
            ({"source": "health", "field": "temp_c", "from": "2020-01-01T00:00:00Z", "to": end.isoformat()},
             "the range is longer than 400 days")):
        refused = await history(**params)
        assert refused.status_code == 422 and reason in refused.json()["detail"], refused.text
    for points_asked in (1, 2001):
        assert (await history(source="health", field="temp_c", points=points_asked)).status_code == 422
    assert (await history(source="air", field="temp_c")).status_code == 422
    assert (await fleet.get("/api/devices/env-nobody/history?source=health&field=temp_c")).status_code == 404
    async with httpx.AsyncClient(base_url=str(fleet.base_url)) as anonymous:
        assert (await anonymous.get("/api/devices/env-tp-01/history?source=health&field=temp_c")).status_code == 401


async def test_the_device_page_charts_its_history_and_shows_alerts_commands_and_state(
        fleet: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    start = (now - timedelta(hours=3)).replace(second=0, microsecond=0)
    await fleet.post("/api/devices", json={"id": "env-tp-02", "kind": "pi", "ward": "tan-phu", "site": "Market",
                                           "latitude": 11.5349, "longitude": 106.8823})
    await env_node_history("env-tp-02", start, minutes=180, gap=range(60, 100))
    await ingest([message("env-tp-02", "event", 3, 500, id="smoke-1", type="alarm", phase="start",
                          category="other", data={"sensor": "smoke"})], now - timedelta(minutes=2))
    sent = await fleet.post("/api/devices/env-tp-02/commands", json={"name": "ping"})
    assert sent.status_code == 202
    await ingest([message("env-tp-02", "cmd/result", 3, 501, id=sent.json()["id"], status="ok",
                          detail={"pong": True})], now - timedelta(minutes=1))
    assert (await fleet.put("/api/devices/env-tp-02/desired", json={"doc": {"health_period_s": 30}})).status_code \
        in (200, 202)
    await alert("env-tp-02", "tan-phu", Severity.MAJOR, AlertState.RESOLVED, now - timedelta(hours=2),
                "env-tp-02 offline for 5 min")
    await alert("env-tp-02", "tan-phu", Severity.WARNING, AlertState.OPEN, now - timedelta(minutes=3),
                "sensor alarm: smoke", kind="sensor_alarm")

    async with page_client(fleet) as http:
        page = await http.get("/devices/env-tp-02?range=24h")
        assert page.status_code == 200
        html = page.text
        assert 'id="device-credential">no MQTT password issued<' in html
        assert "11.53490, 106.88230" in html and "Market" in html
        assert re.findall(r'<tr class="alert-([a-z]+)" data-alert', html) == ["open", "resolved"]
        assert "ping" in html and "{&#34;pong&#34;: true}" in html and "alarm" in html
        assert re.search(r"<dt>Desired version</dt><dd>1</dd>", html) and "health_period_s" in html
        # one chart per field: health (the preferred ones first), then the env role's telemetry
        titles = re.findall(r'<figure class="chart-box" data-source="([a-z]+)" data-field="([^"]+)">', html)
        assert titles[:2] == [("health", "temp_c"), ("health", "heap_free")]
        assert ("health", "roles.env.fan_rpm") in titles and ("telemetry", "env · pm25") in titles
        # the temperature chart: its drawn points are the API's buckets for the same range, the gap a gap
        chart = html.split('data-field="temp_c">', 1)[1].split("</figure>", 1)[0]
        link = re.search(r'href="(/api/devices/env-tp-02/history\?[^"]+)"', chart)
        assert link is not None
        api = link[1].replace("&amp;", "&")
        buckets = (await fleet.get(api)).json()["points"]
        assert parse_qs(urlsplit(api).query)["points"] == ["180"] and len(buckets) > 15  # 8-minute buckets
        svg = chart.split("<svg", 1)[1]
        drawn = sum(len(line.split()) for line in re.findall(r'<polyline class="mean" points="([^"]+)"', svg))
        drawn += len(re.findall(r'<circle class="mean"', svg))
        assert drawn == len(buckets) and f'data-points="{len(buckets)}"' in svg
        assert 'data-segments="2"' in svg  # before and after the 40 minutes with no report
        assert re.search(r'<text class="tick"[^>]*>\d\d:\d\d</text>', svg)  # local times on the axis

        week = await http.get("/devices/env-tp-02?range=7d")
        assert week.status_code == 200 and "<b class=\"range\">7d</b>" in week.text
        local = start.astimezone(ZoneInfo("Asia/Ho_Chi_Minh"))
        custom = await http.get("/devices/env-tp-02", params={
            "range": "custom", "from": local.strftime("%Y-%m-%dT%H:%M"),
            "to": (local + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")})
        first_hour = custom.text.split('data-field="temp_c">', 1)[1].split("</figure>", 1)[0]
        assert custom.status_code == 200 and 'data-segments="1"' in first_hour and 'data-points="60"' in first_hour
        backwards = await http.get("/devices/env-tp-02", params={"range": "custom", "from": "2026-01-02T00:00",
                                                                 "to": "2026-01-01T00:00"})
        assert backwards.status_code == 422 and 'id="range-refused"' in backwards.text
        assert "must be before" in backwards.text
        assert (await http.get("/devices/env-tp-02?range=1y")).status_code == 422
        too_early = await http.get("/devices/env-tp-02", params={"range": "custom", "from": "0001-01-01T00:00",
                                                                 "to": "0001-01-01T01:00"})
        assert too_early.status_code == 422 and "as dates and times" in too_early.text
