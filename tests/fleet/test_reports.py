"""City reports (fleet/relay/reports.py, docs/relay.md "City reports") on SQLite and PostgreSQL: a
generated month of events, telemetry, presence changes and receipts, inserted directly, and every
figure checked against the same figure computed here from the generated data in Python (not by
the same SQL): month edges in the city's zone, a counter reset, an empty month, the CSV read back,
the 422s."""

import asyncio
import base64
import csv
import io
import itertools
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from fleet.auth.roles import Role
from fleet.broadcast.models import Broadcast, BroadcastReceipt, Clip, Level, ReceiptState
from fleet.db import database
from fleet.models import Device, DeviceStatus, EventRecord, TelemetryRecord
from fleet.ops.models import PresenceChange
from fleet.relay.reports import Month, city_report, parse_month
from fleet.settings import Settings
from tests.fleet.cdp import Page, browser_page
from tests.support.fleet import fleet_settings, running_fleet, token_for
from tests.support.mosquitto import Mosquitto

TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # the default FLEET_TIMEZONE
MONTH = parse_month("2026-10", TZ)
START, END = MONTH.start, MONTH.end  # 2026-09-30 17:00 UTC, 2026-10-31 17:00 UTC
NOW = END + timedelta(days=3)
WARDS = ["tan-phu", "tan-binh", "=HYPERLINK(1)", ""]
CATEGORIES = ["security", "traffic_safety", "other"]
US = timedelta(microseconds=1)
FINAL_STATES = [ReceiptState.COMPLETED, ReceiptState.FAILED, ReceiptState.MISSED, ReceiptState.NOT_DELIVERED,
                ReceiptState.SKIPPED, ReceiptState.STARTED]


@dataclass
class Generated:
    devices: list[Device] = field(default_factory=list)
    created: dict[str, datetime] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    telemetry: list[TelemetryRecord] = field(default_factory=list)
    presence: list[PresenceChange] = field(default_factory=list)
    receipts: list[tuple[str, datetime, ReceiptState]] = field(default_factory=list)

    def ward(self, device_id: str) -> str:
        return next(d.ward for d in self.devices if d.id == device_id)


def _moment(rng: random.Random) -> datetime:
    """Mostly inside the month, some in the days around it, some exactly on its edges."""
    pick = rng.random()
    if pick < 0.03:
        return START
    if pick < 0.06:
        return END
    if pick < 0.09:
        return START - US
    if pick < 0.12:
        return END - US
    return START - timedelta(days=2) + timedelta(seconds=rng.uniform(0, (END - START).total_seconds() + 4 * 86400))


def generate(seed: int = 14, wards: list[str] = WARDS, devices: int = 40) -> Generated:
    rng = random.Random(seed)
    g = Generated()
    seq = iter(range(1, 10**9))
    for n in range(devices):
        kind = ["cam", "hot", "lamp", "spk"][n % 4]
        status = DeviceStatus.DECOMMISSIONED if n == devices - 1 else DeviceStatus.ACTIVE
        g.devices.append(Device(id=f"{kind}-{n:02d}", kind="pi" if kind in ("cam", "hot") else "esp32",
                                ward=wards[n // 4 % len(wards)], status=status))
        # most devices are older than the month; two are new in the middle of it, one after it
        g.created[f"{kind}-{n:02d}"] = (START + timedelta(days=10, hours=n) if n in (5, 6) else
                                        END + timedelta(days=1) if n == 7 else START - timedelta(days=60))
    for device in g.devices:
        def stamp(device: Device = device) -> dict[str, Any]:
            return {"device_id": device.id, "ses": 1, "seq": next(seq), "received_at": NOW}
        if device.id.startswith("cam"):
            for _ in range(rng.randrange(20, 60)):
                at, category = _moment(rng), rng.choice(CATEGORIES)
                eid = f"m{next(seq)}"
                g.events.append(EventRecord(**stamp(), at=at, event_id=eid, type="motion", phase="start",
                                            category=category, data={}))
                g.events.append(EventRecord(**stamp(), at=at + timedelta(seconds=20), event_id=eid, type="motion",
                                            phase="end", category=category, data={}))
            for _ in range(rng.randrange(0, 4)):
                g.events.append(EventRecord(**stamp(), at=_moment(rng), event_id=f"a{next(seq)}", type="disk_full",
                                            phase="once", category="other", data={}))
        if device.id.startswith("lamp"):
            for _ in range(rng.randrange(0, 5)):
                at = _moment(rng)
                g.events.append(EventRecord(**stamp(), at=at, event_id=f"f{next(seq)}", type="lamp_failure",
                                            phase="start", category="other", data={}))
                g.events.append(EventRecord(**stamp(), at=at + timedelta(hours=1), event_id=f"f{seq}",
                                            type="lamp_failure", phase="end", category="other", data={}))
            burn, energy = rng.uniform(0, 5000), rng.uniform(0, 90000)
            moment = START - timedelta(days=1, hours=rng.uniform(0, 6))
            while moment < END + timedelta(days=1):
                lit = rng.uniform(0, 6)
                burn, energy = burn + lit, energy + lit * rng.uniform(50, 120)
                if device.id == "lamp-02" and START + timedelta(days=15) < moment < START + timedelta(days=15, hours=6):
                    burn, energy = lit, lit * 80  # the node's counters were wiped: they start again from 0
                g.telemetry.append(TelemetryRecord(**stamp(), at=moment, role="light", readings={
                    "level": 800, "ma": 300, "burn_h": round(burn, 3), "energy_wh": round(energy, 3)}))
                moment += timedelta(hours=6)
        if device.id.startswith("hot"):
            day = datetime(2026, 9, 28, tzinfo=TZ)
            while day < datetime(2026, 11, 3, tzinfo=TZ):
                accesses = rng.randrange(0, 400)
                users = rng.randrange(0, accesses + 1)
                g.telemetry.append(TelemetryRecord(**stamp(), at=day.astimezone(UTC), role="hotspot", readings={
                    "period_s": 86400, "start_s": int(day.timestamp()), "accesses": accesses, "users": users,
                    "random_accesses": 1, "random_users": 1, "connected": 0, "users_capped": int(users > 380)}))
                # an hourly report at the same moment: the report must not count it again
                g.telemetry.append(TelemetryRecord(**stamp(), at=day.astimezone(UTC), role="hotspot", readings={
                    "period_s": 3600, "start_s": int(day.timestamp()), "accesses": 7, "users": 5,
                    "random_accesses": 0, "random_users": 0, "connected": 0, "users_capped": 0}))
                day = (day + timedelta(days=1, hours=2)).replace(hour=0)
        # presence: a change every few hours to days, from before the month to after it
        moment = START - timedelta(days=rng.uniform(0, 20))
        online = rng.random() < 0.5
        if device.id == "hot-01":
            moment = END + timedelta(days=1)  # never a change up to the month's end: offline all month
        while moment < END + timedelta(days=2):
            g.presence.append(PresenceChange(device_id=device.id, at=moment, online=online, reason="birth"))
            moment += timedelta(seconds=rng.uniform(600, 4 * 86400))
            online = not online
        if device.id.startswith("spk"):
            for _ in range(rng.randrange(5, 30)):
                g.receipts.append((device.id, _moment(rng), rng.choice(FINAL_STATES)))
    return g


async def store(g: Generated) -> None:
    await Device.bulk_create(g.devices)
    for device_id, created in g.created.items():
        await Device.filter(id=device_id).update(created_at=created)
    await EventRecord.bulk_create(g.events, batch_size=1000)
    await TelemetryRecord.bulk_create(g.telemetry, batch_size=1000)
    await PresenceChange.bulk_create(g.presence, batch_size=1000)
    clip = await Clip.create(title="t", source="tts", source_sha256="0" * 64, source_format="wav", source_bytes=1,
                             duration_ms=1000, created_by="test")
    broadcast = await Broadcast.create(title="b", clip=clip, level=Level.NORMAL, targets={"wards": []},
                                       start_local="2026-10-01T08:00:00", timezone=TZ.key, created_by="t",
                                       updated_by="t")
    await BroadcastReceipt.bulk_create([
        BroadcastReceipt(broadcast=broadcast, device_id=device_id, entry_id=f"b1.{n}", occurrence_at=at, version=1,
                         state=state) for n, (device_id, at, state) in enumerate(g.receipts)], batch_size=1000)


def expected(g: Generated, month: Month, now: datetime) -> dict[str, dict[str, Any]]:
    """The figures per ward, computed here in Python from the generated rows."""
    start, end = month.start, month.end
    live = {d.id for d in g.devices if d.status != DeviceStatus.DECOMMISSIONED}
    wards: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "camera": defaultdict(int), "events": defaultdict(int), "lamp_failures": 0, "accesses": 0, "user_days": 0,
        "days_capped": 0, "hotspots": set(), "lamps": set(), "burn_h": 0.0, "energy_wh": 0.0, "avail": [],
        "receipts": defaultdict(int)})
    for d in g.devices:
        if d.id in live:
            _ = wards[d.ward]
    for e in g.events:
        if start <= e.at < end and e.phase in ("start", "once"):
            w = wards[g.ward(e.device_id)]
            w["events"][e.type, e.category] += 1
            if e.type == "motion":
                w["camera"][e.category] += 1
            if e.type == "lamp_failure":
                w["lamp_failures"] += 1
    samples: dict[tuple[str, str], list[tuple[datetime, float]]] = defaultdict(list)
    for t in g.telemetry:
        if not start <= t.at < end:
            continue
        w = wards[g.ward(t.device_id)]
        if t.role == "hotspot" and t.readings["period_s"] == 86400:
            w["accesses"] += t.readings["accesses"]
            w["user_days"] += t.readings["users"]
            w["days_capped"] += t.readings["users_capped"]
            w["hotspots"].add(t.device_id)
        if t.role == "light":
            w["lamps"].add(t.device_id)
            for key in ("burn_h", "energy_wh"):
                samples[t.device_id, key].append((t.at, t.readings[key]))
    for (device_id, key), points in samples.items():
        points.sort()
        rises = sum((b - a) if b >= a else b for (_, a), (_, b) in itertools.pairwise(points))
        wards[g.ward(device_id)][key] += rises
    changes: dict[str, list[PresenceChange]] = defaultdict(list)
    for p in g.presence:
        changes[p.device_id].append(p)
    window_end = min(end, max(now, start))
    for d in g.devices:
        window_start = max(start, g.created[d.id])
        if d.id not in live or window_start >= window_end:
            continue
        up = 0.0
        points = sorted(changes[d.id], key=lambda p: p.at)
        for n, p in enumerate(points):  # the state holds from this change until the next
            until = points[n + 1].at if n + 1 < len(points) else window_end
            low, high = max(p.at, window_start), min(until, window_end)
            if p.online and high > low:
                up += (high - low).total_seconds()
        wards[d.ward]["avail"].append(up / (window_end - window_start).total_seconds())
    for device_id, at, state in g.receipts:
        if start <= at < end:
            wards[g.ward(device_id)]["receipts"][state.value] += 1
    return wards


def check(report: dict[str, Any], want: dict[str, dict[str, Any]]) -> None:
    got = {row["ward"]: row for row in report["wards"]}
    assert set(got) == set(want)
    all_avail: list[float] = []
    for name, w in want.items():
        row = got[name]
        assert row["camera_events"] == {**{c: w["camera"][c] for c in CATEGORIES},
                                        "total": sum(w["camera"].values())}, name
        assert {(e["type"], e["category"]): e["count"] for e in row["events"]} == dict(w["events"]), name
        assert row["lamp_failures"] == w["lamp_failures"]
        assert row["wifi"] == {"hotspots": len(w["hotspots"]), "accesses": w["accesses"],
                               "user_days": w["user_days"], "days_capped": w["days_capped"]}, name
        assert row["lighting"]["lamps"] == len(w["lamps"])
        assert row["lighting"]["burn_h"] == pytest.approx(w["burn_h"], abs=2e-3)
        assert row["lighting"]["energy_kwh"] == pytest.approx(w["energy_wh"] / 1000, abs=2e-3)
        assert row["availability"]["devices"] == len(w["avail"])
        if w["avail"]:
            assert row["availability"]["pct"] == pytest.approx(100 * sum(w["avail"]) / len(w["avail"]), abs=0.01)
        else:
            assert row["availability"]["pct"] is None
        all_avail += w["avail"]
        receipts = w["receipts"]
        assert row["broadcasts"]["played"] == receipts["completed"]
        assert row["broadcasts"]["scheduled"] == sum(n for s, n in receipts.items() if s != "skipped")
        for state in FINAL_STATES:
            assert row["broadcasts"][state.value] == receipts[state.value], (name, state)
    totals = report["totals"]
    assert totals["camera_events"]["total"] == sum(sum(w["camera"].values()) for w in want.values())
    assert totals["wifi"]["accesses"] == sum(w["accesses"] for w in want.values())
    assert totals["availability"]["pct"] == pytest.approx(100 * sum(all_avail) / len(all_avail), abs=0.02)


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[None]:
    async with database(Settings(database_url=database_url)):
        yield


async def test_every_figure_matches_the_generated_month(db: None) -> None:
    g = generate()
    await store(g)
    report = await city_report(MONTH, now=NOW)
    assert report["start"] == datetime(2026, 9, 30, 17, tzinfo=UTC) and report["end"] == datetime(2026, 10, 31, 17,
                                                                                                  tzinfo=UTC)
    check(report, expected(g, MONTH, NOW))
    # the figures are not empty: the generator made some of each
    totals = report["totals"]
    assert min(totals["camera_events"][c] for c in CATEGORIES) > 0
    assert totals["lamp_failures"] > 0 and totals["wifi"]["accesses"] > 0 and totals["lighting"]["burn_h"] > 0
    assert totals["broadcasts"]["played"] > 0
    # a month still running: availability over its part up to now
    middle = START + timedelta(days=12, hours=5)
    check(await city_report(MONTH, now=middle), expected(g, MONTH, middle))
    # one ward
    one = await city_report(MONTH, ward="tan-binh", now=NOW)
    assert [row["ward"] for row in one["wards"]] == ["tan-binh"]
    check(one, {"tan-binh": expected(g, MONTH, NOW)["tan-binh"]})
    # the next month, in which the generator left only edges and stragglers
    november = parse_month("2026-11", TZ)
    check(await city_report(november, now=NOW), expected(g, november, NOW))


async def test_counter_reset_counts_the_value_after_it(db: None) -> None:
    await Device.create(id="lamp-x", kind="esp32", ward="w")
    values = [(0, 100.0), (6, 103.5), (12, 1.5), (18, 4.0), (24, 4.0)]  # wiped between 6 and 12
    await TelemetryRecord.bulk_create([
        TelemetryRecord(device_id="lamp-x", ses=1, seq=n, received_at=NOW, at=START + timedelta(hours=h),
                        role="light", readings={"burn_h": v, "energy_wh": v * 100}) for n, (h, v) in enumerate(values)])
    row = (await city_report(MONTH, now=NOW))["wards"][0]
    assert row["lighting"] == {"lamps": 1, "burn_h": 3.5 + 1.5 + 2.5, "energy_kwh": 0.75}


async def test_empty_month(db: None) -> None:
    report = await city_report(MONTH, now=NOW)
    assert report["wards"] == []
    assert report["totals"]["camera_events"]["total"] == 0 and report["totals"]["availability"]["pct"] is None


@pytest.fixture
async def fleet(database_url: str, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    # retention kept off the generated month: its rows are weeks old
    settings = fleet_settings(database_url, mosquitto.url, retention_raw_days=3650, retention_hourly_days=3650,
                              retention_events_days=3650, retention_presence_days=3650)
    async with running_fleet(settings) as http:
        yield http


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_api_json_csv_and_refusals(fleet: httpx.AsyncClient) -> None:
    g = generate(seed=3)
    await store(g)
    answer = await fleet.get("/api/reports/city", params={"month": "2026-10"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["month"] == "2026-10" and report["timezone"] == TZ.key
    check(report, expected(g, MONTH, datetime.now(UTC)))
    one = (await fleet.get("/api/reports/city", params={"month": "2026-10", "ward": "tan-phu"})).json()
    assert [row["ward"] for row in one["wards"]] == ["tan-phu"]

    sheet = await fleet.get("/api/reports/city.csv", params={"month": "2026-10"})
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/csv")
    assert "2026-10" in sheet.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(sheet.content.decode("utf-8"))))
    assert rows[0] == ["month", "ward", "figure", "value"]
    back: dict[tuple[str, str], str] = {(r[1], r[2]): r[3] for r in rows[1:]}
    assert ("'=HYPERLINK(1)", "camera_events.security") in back  # a formula-looking ward is text
    assert not any(r[1].startswith(("=", "+", "-", "@")) for r in rows[1:])
    for row in report["wards"]:
        name = "'" + row["ward"] if row["ward"].startswith("=") else row["ward"]
        assert int(back[name, "camera_events.security"]) == row["camera_events"]["security"]
        assert int(back[name, "wifi.accesses"]) == row["wifi"]["accesses"]
        assert int(back[name, "wifi.user_days"]) == row["wifi"]["user_days"]
        assert float(back[name, "lighting.energy_kwh"]) == pytest.approx(row["lighting"]["energy_kwh"])
        pct = back[name, "availability.pct"]
        assert (float(pct) if pct else None) == row["availability"]["pct"]
        assert int(back[name, "broadcasts.played"]) == row["broadcasts"]["played"]
        for event in row["events"]:
            assert int(back[name, f"events.{event['type']}.{event['category']}"]) == event["count"]
    assert int(back["*", "camera_events.total"]) == report["totals"]["camera_events"]["total"]

    for bad in ("2026-13", "2026-1", "26-10", "abc", "", "2026-10-01", "1999-12"):
        for path in ("/api/reports/city", "/api/reports/city.csv"):
            refused = await fleet.get(path, params={"month": bad})
            assert refused.status_code == 422, (path, bad)
            assert bad not in refused.text or bad == ""
    assert (await fleet.get("/api/reports/city")).status_code == 422
    reader = await token_for(fleet, Role.READ_ONLY)
    assert (await fleet.get("/api/reports/city", params={"month": "2026-10"},
                            headers={"Authorization": f"Bearer {reader}"})).status_code == 200
    async with httpx.AsyncClient(base_url=fleet.base_url) as stranger:
        assert (await stranger.get("/api/reports/city", params={"month": "2026-10"})).status_code == 401
    page = await fleet.get("/reports", params={"month": "2026-10"})
    assert page.status_code == 200 and "<svg" in page.text and "/api/reports/city.csv?month=2026-10" in page.text


CITY_WARDS = ["tan-phu", "tan-binh", "tan-xuan", "tan-thien", "tan-dong", "phu-thinh", "tien-thanh", "tan-thanh"]


async def shot(page: Page, path: Path) -> None:
    await page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    height = int(await page.evaluate("document.documentElement.scrollHeight"))
    await page.call("Emulation.setDeviceMetricsOverride", width=1280, height=min(max(height, 600), 3200),
                    deviceScaleFactor=1, mobile=False)
    data = base64.b64decode((await page.call("Page.captureScreenshot", format="png"))["data"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    await asyncio.to_thread(path.write_bytes, data)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_page_in_a_browser(fleet: httpx.AsyncClient, artifacts_dir: Path) -> None:
    """The page as Chromium draws it, in both languages: the tables hold the API's figures, the charts
    are painted by the stylesheet and nothing breaks the Content-Security-Policy."""
    await store(generate(seed=8, wards=CITY_WARDS, devices=8 * 4 * 3 + 1))
    report = (await fleet.get("/api/reports/city", params={"month": "2026-10"})).json()
    base = str(fleet.base_url).rstrip("/")
    async with browser_page() as page:
        await page.goto(base + (await fleet.post("/api/auth/login-link")).json()["url"])
        await page.wait_for("document.getElementById('count-alerts') !== null", "the overview, logged in")
        assert await page.evaluate("document.querySelector('nav a[href=\"/reports\"]') !== null")
        for lang, heading in (("en", "City report, 2026-10"), ("vi", "Báo cáo thành phố, tháng 2026-10")):
            await page.goto(f"{base}/reports?month=2026-10&lang={lang}")
            await page.wait_for("document.readyState === 'complete' && document.querySelector('svg.chart') !== null",
                                "the charts")
            assert await page.evaluate("document.querySelector('h1').textContent") == heading
            assert await page.evaluate("document.querySelectorAll('svg.chart.bars').length") == 4
            cells = await page.evaluate("Array.from(document.querySelectorAll('#camera-table tr.total th.n'))"
                                        ".map(c => c.textContent)")
            assert cells[3] == f"{report['totals']['camera_events']['total']:,}"
            fill = await page.evaluate("getComputedStyle(document.querySelector('svg.chart rect.bar.s0')).fill")
            assert fill == "rgb(31, 90, 153)"
            assert await page.evaluate("window.__csp") == []
            await shot(page, artifacts_dir / f"reports-page-{lang}.png")
