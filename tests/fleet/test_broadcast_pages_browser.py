"""The broadcast and audio pages in a real headless Chromium under the fleet's Content-Security-Policy:
the week calendar with broadcasts of each level, the form's review with a conflict and then the save,
the broadcast's page, the emergency button's confirmation, the audio library with a player that loads
its clip. Screenshots (1280 wide, the whole page) are test artifacts in test-artifacts/:
broadcast-pages-week.png, broadcast-pages-week-en.png, broadcast-pages-review.png,
broadcast-pages-saved.png, broadcast-pages-detail.png (with receipts),
broadcast-pages-emergency-confirm.png, broadcast-pages-audio.png."""

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from fleet.broadcast.models import Broadcast, BroadcastReceipt, ReceiptState
from fleet.models import Device
from tests.fleet.audio_kit import audio_fleet, tone, upload
from tests.fleet.cdp import Page, browser_page
from tests.support.mosquitto import Mosquitto

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
SHOT_WIDTH = 1280
SHOT_HEIGHT_MAX = 2400


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with audio_fleet(tmp_path, mosquitto, f"sqlite://{tmp_path / 'fleet.sqlite3'}") as http:
        yield http


async def shot(page: Page, path: Path) -> Path:
    """The whole page (up to SHOT_HEIGHT_MAX px high) as a PNG."""
    await page.call("Emulation.setDeviceMetricsOverride", width=SHOT_WIDTH, height=900, deviceScaleFactor=1,
                    mobile=False)
    height = int(await page.evaluate("document.documentElement.scrollHeight"))
    await page.call("Emulation.setDeviceMetricsOverride", width=SHOT_WIDTH, height=min(max(height, 600),
                    SHOT_HEIGHT_MAX), deviceScaleFactor=1, mobile=False)
    taken = await page.call("Page.captureScreenshot", format="png")
    data = base64.b64decode(taken["data"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    await asyncio.to_thread(path.write_bytes, data)
    return path


async def open_page(page: Page, url: str, ready: str, what: str) -> None:
    await page.goto(url)
    await page.wait_for(f"document.readyState === 'complete' && Boolean({ready})", what)


async def click_and_wait(page: Page, selector: str, ready: str, what: str) -> None:
    await page.evaluate(f"document.querySelector({json.dumps(selector)}).setAttribute('data-left', '1')")
    await page.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
    # the old page is gone (its marked button too) and the new one is ready
    await page.wait_for("document.readyState === 'complete' && !document.querySelector('[data-left]') && "
                        f"Boolean({ready})", what)


async def test_the_broadcast_pages_in_chromium(fleet: httpx.AsyncClient, tmp_path: Path,
                                               artifacts_dir: Path) -> None:
    http = fleet
    for device_id, ward in (("spk-tp-01", "Tân Phú"), ("spk-tp-02", "Tân Phú"), ("spk-tb-01", "Tân Bình"),
                            ("spk-tx-01", "Tân Xuân"), ("spk-tx-02", "Tân Xuân")):
        made = await http.post("/api/devices", json={"id": device_id, "kind": "esp32", "ward": ward,
                                                     "tags": ["cho"] if ward == "Tân Bình" else []})
        assert made.status_code == 201, made.text
        await Device.filter(id=device_id).update(roles=["speaker"])  # as their births would set them
    news = (await http.post("/api/audio/tts", json={"title": "Bản tin sáng", "text": "Bản tin sáng của phường"}))
    chime = await upload(http, tone(tmp_path / "chuong.wav", 3.0), "Chuông báo cháy")
    alarm = await http.post("/api/audio/tts", json={"title": "Báo cháy", "text": "Có cháy, đề nghị bà con sơ tán"})
    assert news.status_code == chime.status_code == alarm.status_code == 201
    news_clip, chime_clip, alarm_clip = news.json()["id"], chime.json()["id"], alarm.json()["id"]

    tomorrow = datetime.now(HCM).date() + timedelta(days=1)
    monday = tomorrow - timedelta(days=tomorrow.weekday())

    def at(day: date, hour: int, minute: int = 0) -> str:
        return datetime(day.year, day.month, day.day, hour, minute).isoformat()

    async def schedule(**body: object) -> int:
        saved = await http.post("/api/broadcasts", json={"confirm": True, **body})
        assert saved.status_code == 201, saved.text
        return int(saved.json()["broadcast"]["id"])

    daily = await schedule(title="Bản tin sáng", clip_id=news_clip, targets={"wards": ["Tân Phú", "Tân Xuân"]},
                           start=at(tomorrow, 6, 30), rrule="FREQ=DAILY", exceptions=[])
    weekly = await schedule(title="Phòng cháy chữa cháy", clip_id=chime_clip, level="priority",
                            targets={"tags": ["cho"]}, start=at(tomorrow, 17, 0),
                            rrule="FREQ=WEEKLY;BYDAY=MO,WE,FR,SA,SU")
    drill = await schedule(title="Diễn tập báo cháy", clip_id=alarm_clip, level="emergency",
                           targets={"wards": ["Tân Bình"]}, start=at(tomorrow, 9, 15))
    cancelled = await schedule(title="Đã hủy", clip_id=news_clip, targets={"wards": ["Tân Phú"]},
                               start=at(tomorrow, 10, 0))
    assert (await http.post(f"/api/broadcasts/{cancelled}/cancel")).status_code == 200

    base = str(http.base_url).rstrip("/")
    async with browser_page() as page:
        # a city staff member's browser asks for Vietnamese (headless Chromium would send en-US)
        agent = await page.evaluate("navigator.userAgent")
        await page.call("Emulation.setUserAgentOverride", userAgent=agent, acceptLanguage="vi-VN,vi;q=0.9,en;q=0.5")
        await page.goto(base + (await http.post("/api/auth/login-link")).json()["url"])
        await page.wait_for("document.getElementById('count-online') !== null", "the status page")
        assert await page.evaluate("document.documentElement.lang") == "en"  # the status page is English still
        await page.evaluate("document.querySelector('nav a[href=\"/broadcasts\"]').click()")
        await page.wait_for("document.getElementById('week') !== null", "the calendar")
        assert await page.evaluate("document.documentElement.lang") == "vi"
        await open_page(page, f"{base}/broadcasts?week={monday.isoformat()}", "document.getElementById('week')",
                        "the calendar of tomorrow's week")

        # placed by day and hour on the fleet's wall clock; cancelled ones hidden; a colour per level
        placed = await page.evaluate(
            "Array.from(document.querySelectorAll('a.occ')).map(a => [a.dataset.broadcast, a.dataset.day, "
            "a.querySelector('b').textContent, a.closest('tr').querySelector('th').textContent])")
        days_left = 7 - tomorrow.weekday()
        by_broadcast: dict[str, list[list[str]]] = {}
        for row in placed:
            by_broadcast.setdefault(row[0], []).append(row)
        assert str(cancelled) not in by_broadcast
        assert [(r[1], r[2], r[3]) for r in by_broadcast[str(daily)]] == [
            ((tomorrow + timedelta(days=i)).isoformat(), "06:30", "06:00") for i in range(days_left)]
        assert [(r[1], r[2]) for r in by_broadcast[str(drill)]] == [(tomorrow.isoformat(), "09:15")]
        weekly_days = {(monday + timedelta(days=i)).isoformat() for i in (0, 2, 4, 5, 6)
                       if monday + timedelta(days=i) >= tomorrow}
        assert {r[1] for r in by_broadcast[str(weekly)]} == weekly_days
        colours = await page.evaluate(
            "Object.fromEntries(['normal', 'priority', 'emergency'].map(l => [l, "
            "getComputedStyle(document.querySelector('a.occ.level-' + l)).backgroundColor]))")
        assert len(set(colours.values())) == 3, colours
        heading = await page.evaluate("document.querySelector('h1.page').textContent")
        assert heading.startswith("Lịch phát thanh tuần")
        assert await page.evaluate("window.__csp") == []
        week_png = await shot(page, artifacts_dir / "broadcast-pages-week.png")

        await open_page(page, f"{base}/broadcasts?week={monday.isoformat()}&lang=en",
                        "document.getElementById('week')", "the calendar in English")
        assert (await page.evaluate("document.querySelector('h1.page').textContent")).startswith("Broadcasts, week")
        week_en_png = await shot(page, artifacts_dir / "broadcast-pages-week-en.png")

        # the form: a morning notice on Tân Bình at the drill's time; the review shows the conflict
        await open_page(page, f"{base}/broadcasts/new?lang=vi", "document.getElementById('broadcast-form')",
                        "the form")
        await page.evaluate(f"""(() => {{
            const f = document.getElementById('broadcast-form');
            f.title.value = 'Thông báo chợ Tân Bình';
            f.clip_id.value = '{news_clip}';
            f.querySelector('input[name=wards][value="Tân Bình"]').checked = true;
            f.start.value = '{at(tomorrow, 9, 15)[:16]}';
            f.recurrence.value = 'weekly';
            for (const d of ['TU', 'TH']) f.querySelector('input[name=days][value=' + d + ']').checked = true;
            f.exceptions.value = '{(tomorrow + timedelta(days=14)).isoformat()}';
        }})()""")
        await click_and_wait(page, "#review-button", "document.getElementById('review') !== null", "the review")
        conflicts = await page.evaluate(
            "Array.from(document.querySelectorAll('#review-conflicts tbody tr')).map(r => "
            "[r.dataset.other, r.className, r.cells[3].textContent])")
        tuesday_or_thursday = tomorrow.weekday() in (1, 3)
        if tuesday_or_thursday:  # the drill plays tomorrow at 09:15 on the same speaker: it wins by level
            assert conflicts == [[str(drill), "winner-other", "Lịch kia (do mức độ cao hơn)"]]
        occurrences = await page.evaluate("document.querySelectorAll('#review-occurrences li').length")
        assert occurrences == 10
        assert await page.evaluate("document.querySelector('#review').textContent.includes('Số loa sẽ phát: 1')")
        assert await page.evaluate("window.__csp") == []
        review_png = await shot(page, artifacts_dir / "broadcast-pages-review.png")
        if tuesday_or_thursday:
            await page.evaluate("document.getElementById('confirm').checked = true")
        await click_and_wait(page, "#save-button", "document.getElementById('versions') !== null",
                             "the saved broadcast's page")
        saved_id = int(await page.evaluate("document.querySelector('section[data-broadcast]').dataset.broadcast"))
        saved = await Broadcast.get(id=saved_id)
        assert (saved.rrule, saved.targets["wards"]) == ("FREQ=WEEKLY;BYDAY=TU,TH", ["Tân Bình"])
        assert await page.evaluate("document.querySelector('.done').textContent") == "Đã lưu lịch phát thanh."
        assert await page.evaluate("document.querySelectorAll('#next-occurrences li').length") == 10
        assert await page.evaluate("window.__csp") == []
        saved_png = await shot(page, artifacts_dir / "broadcast-pages-saved.png")

        # the morning news two days ago, as the ingest and the sweep leave its receipts (their own
        # tests: test_broadcast_receipts*): the page shows what the receipts API counts
        played_at = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 6, 30, tzinfo=HCM) - timedelta(days=3)
        outcomes = (("spk-tp-01", ReceiptState.COMPLETED, None, 120), ("spk-tp-02", ReceiptState.COMPLETED, None, 95),
                    ("spk-tx-01", ReceiptState.FAILED, "bad clip: short header", None),
                    ("spk-tx-02", ReceiptState.NOT_DELIVERED, None, None))
        for device_id, state, reason, late_ms in outcomes:
            await BroadcastReceipt.create(
                broadcast_id=daily, device_id=device_id, entry_id=f"b{daily}.{int(played_at.timestamp())}",
                occurrence_at=played_at, version=1, state=state, reason=reason,
                started_at=None if late_ms is None else played_at + timedelta(milliseconds=late_ms))
        await open_page(page, f"{base}/broadcasts/{daily}?occurrence={played_at.astimezone(UTC).isoformat()}"
                        .replace("+", "%2B"), "document.getElementById('speaker-receipts')", "the receipts")
        assert await page.evaluate("document.getElementById('receipts-played').textContent") == "2"
        assert await page.evaluate("document.querySelectorAll('#speaker-receipts tbody tr').length") == 4
        assert await page.evaluate("window.__csp") == []
        detail_png = await shot(page, artifacts_dir / "broadcast-pages-detail.png")

        # the emergency button: pick, then a page that says how many speakers it reaches
        await page.evaluate("document.querySelector('nav a.nav-emergency').click()")
        await page.wait_for("document.getElementById('emergency-form') !== null", "the emergency form")
        await page.evaluate(f"""(() => {{
            const f = document.getElementById('emergency-form');
            f.clip_id.value = '{alarm_clip}';
            f.querySelector('input[name=wards][value="*"]').checked = true;
        }})()""")
        await click_and_wait(page, "#next-button", "document.getElementById('confirm-form') !== null",
                             "the emergency confirmation")
        assert await page.evaluate("document.getElementById('emergency-count').textContent") == \
            "Phát khẩn cấp tới 5 loa ở 3 phường?"
        assert await page.evaluate("document.getElementById('confirm').required")
        assert await page.evaluate("window.__csp") == []
        emergency_png = await shot(page, artifacts_dir / "broadcast-pages-emergency-confirm.png")
        # the browser does not send it unconfirmed: the box is required (and the API wants confirm too)
        assert await page.evaluate("document.getElementById('confirm-form').checkValidity()") is False

        # the library: a player per clip that loads its audio under the page's policy
        await page.evaluate("document.querySelector('nav a[href=\"/audio\"]').click()")
        await page.wait_for("document.getElementById('clips') !== null", "the audio library")
        assert await page.evaluate("document.querySelectorAll('#clips audio').length") == 3
        await page.evaluate("document.querySelector('#clips audio').load()")
        await page.wait_for("document.querySelector('#clips audio').readyState >= 1", "the clip's metadata")
        duration = await page.evaluate("document.querySelector('#clips audio').duration")
        assert 1.0 < duration < 10.0
        assert await page.evaluate("window.__csp") == []
        audio_png = await shot(page, artifacts_dir / "broadcast-pages-audio.png")
    for path in (week_png, week_en_png, review_png, saved_png, detail_png, emergency_png, audio_png):
        assert path.stat().st_size > 10_000
