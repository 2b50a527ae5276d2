"""The broadcast and audio pages on a real fleet (SQLite and PostgreSQL): the week calendar, the form's
review with its conflicts before a save, edit, cancel, repeat, the audio library's upload,
text-to-speech and delete; who may change what; cross-site refusal; Vietnamese by default, English
on request."""

import html
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from fleet.auth.people import create_user
from fleet.auth.roles import Role
from fleet.broadcast.models import Broadcast, BroadcastReceipt, BroadcastStatus, DeviceClock, ReceiptState
from fleet.models import AuditEntry, Device
from fleet.web.broadcast_form import BroadcastForm
from tests.fleet.audio_kit import audio_fleet, tone
from tests.support.fleet import ADMIN_PASSWORD
from tests.support.mosquitto import Mosquitto

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
WARD = "Tân Phú"


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with audio_fleet(tmp_path, mosquitto, database_url) as http:
        yield http


@asynccontextmanager
async def browser(http: httpx.AsyncClient, role: Role, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """A person's browser: the session cookie, and the Origin a browser sends with the pages' forms."""
    username = f"{role.value.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    await create_user(username, ADMIN_PASSWORD, role)
    base = str(http.base_url).rstrip("/")
    async with httpx.AsyncClient(base_url=base, headers={"Origin": base, **headers}, timeout=60) as client:
        login = await client.post("/api/auth/login", json={"username": username, "password": ADMIN_PASSWORD})
        assert login.status_code == 200 and client.cookies.get("ioc_session")
        yield client


async def speakers(http: httpx.AsyncClient) -> None:
    for device_id, ward, tags, roles in (("spk-a1", WARD, [], ["speaker"]), ("spk-a2", WARD, [], ["speaker"]),
                                          ("spk-b1", "Tân Bình", ["market"], ["speaker"]),
                                          ("light-a1", WARD, ["market"], ["light"])):
        made = await http.post("/api/devices", json={"id": device_id, "kind": "esp32", "ward": ward, "tags": tags})
        assert made.status_code == 201, made.text
        await Device.filter(id=device_id).update(roles=roles)  # as their births would set them


def tomorrow(hour: int, minute: int = 0) -> str:
    day = datetime.now(HCM).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute).isoformat(timespec="minutes")


def form(clip: int, **fields: Any) -> dict[str, Any]:
    """The form's fields; a save carries the fingerprint of the values reviewed (the review page's
    hidden `reviewed`), as the browser sends it after a review of the same values."""
    values: dict[str, Any] = {"title": "Bản tin sáng", "clip_id": str(clip), "level": "normal", "wards": [WARD],
                              "start": tomorrow(6, 30), "recurrence": "daily", "order": "100", "step": "review"}
    values.update(fields)
    if values["step"] == "save" and "reviewed" not in values:
        as_lists = {k: v if isinstance(v, list) else [v] for k, v in values.items()}
        values["reviewed"] = BroadcastForm.parse(as_lists).fingerprint()
    return values


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def spoken_clip(http: httpx.AsyncClient, text: str = "Bản tin sáng") -> int:
    made = await http.post("/api/audio/tts", json={"title": "tin", "text": text})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


async def test_language_vietnamese_first_then_english(fleet: httpx.AsyncClient) -> None:
    async with browser(fleet, Role.IOC_OPERATOR) as person:
        page = await person.get("/broadcasts")
        assert page.status_code == 200 and '<html lang="vi">' in page.text
        assert "Lịch phát thanh tuần" in page.text and "Tuần trước" in page.text and "Tạo lịch phát" in page.text
        english = await person.get("/broadcasts", params={"lang": "en"})
        assert '<html lang="en">' in english.text and "Broadcasts, week of" in english.text
        assert "Lịch phát thanh" not in english.text
        accepted = await person.get("/audio", headers={"Accept-Language": "fr;q=0.9, en-GB;q=0.8, vi;q=0.5"})
        assert "Audio library" in accepted.text and "Thư viện âm thanh" not in accepted.text
        # the choice is kept in a cookie; only this site's paths are followed back
        chosen = await person.get("/lang/en", params={"next": "/audio"})
        assert chosen.status_code == 303 and chosen.headers["location"] == "/audio"
        assert "Audio library" in (await person.get("/audio")).text
        assert "Thư viện âm thanh" in (await person.get("/audio", params={"lang": "vi"})).text
        for away in ("//evil.example/", "https://evil.example/", "/\\evil"):
            assert (await person.get("/lang/vi", params={"next": away})).headers["location"] == "/"
        assert "Lịch phát thanh" in (await person.get("/broadcasts")).text
        ignored = await person.get("/lang/xx", params={"next": "/broadcasts"})
        assert ignored.status_code == 303 and "ioc_lang" not in ignored.headers.get("set-cookie", "")


async def test_the_form_shows_the_conflicts_before_saving_then_edit_cancel_repeat(fleet: httpx.AsyncClient) -> None:
    await speakers(fleet)
    clip = await spoken_clip(fleet)
    # a priority broadcast already on one of the ward's speakers at the same time
    alert = await fleet.post("/api/broadcasts", json={"title": "Cảnh báo chợ", "clip_id": clip, "level": "priority",
                                                      "targets": {"devices": ["spk-a1"]}, "start": tomorrow(6, 30)})
    assert alert.status_code == 201, alert.text
    alert_id = alert.json()["broadcast"]["id"]
    async with browser(fleet, Role.IOC_OPERATOR) as person:
        blank = await person.get("/broadcasts/new")
        assert blank.status_code == 200
        assert f'value="{WARD}"' in blank.text and "Tân Bình" in blank.text and 'value="market"' in blank.text
        assert "light-a1" not in blank.text  # not a speaker

        review = await person.post("/broadcasts/new", data=form(clip))
        assert review.status_code == 200, text_of(review.text)
        shown = text_of(review.text)
        assert "Số loa sẽ phát: 2" in shown and "Xung đột: 1" in shown
        assert f"#{alert_id} Cảnh báo chợ" in shown and "Lịch kia (do mức độ cao hơn)" in shown
        assert 'name="confirm"' in review.text and 'id="save-button"' in review.text
        fingerprint = re.search(r'name="reviewed" value="([0-9a-f]{32})"', review.text)
        assert fingerprint is not None and fingerprint.group(1) == form(clip, step="save")["reviewed"]
        assert await Broadcast.all().count() == 1  # a review saves nothing
        # values changed after the review: reviewed again, not saved
        changed = await person.post("/broadcasts/new", data=form(clip, step="save", confirm="yes",
                                                                 reviewed=fingerprint.group(1), title="Khác"))
        assert changed.status_code == 200 and "Các giá trị đã thay đổi sau lần xem trước" in changed.text
        assert 'id="review"' in changed.text and await Broadcast.all().count() == 1

        unconfirmed = await person.post("/broadcasts/new", data=form(clip, step="save"))
        assert unconfirmed.status_code == 409 and "confirm=true" in unconfirmed.text
        assert await Broadcast.all().count() == 1
        saved = await person.post("/broadcasts/new", data=form(clip, step="save", confirm="yes"))
        assert saved.status_code == 303, text_of(saved.text)
        location = saved.headers["location"]
        news_id = int(re.match(r"/broadcasts/(\d+)\?done=saved$", location).group(1))  # type: ignore[union-attr]
        news = await Broadcast.get(id=news_id)
        assert (news.rrule, news.targets["wards"], news.created_by.startswith("ioc-operator")) == (
            "FREQ=DAILY", [WARD], True)

        detail = await person.get(location)
        assert detail.status_code == 200
        shown = text_of(detail.text)
        assert "Đã lưu lịch phát thanh." in shown and "Hằng ngày" in shown and f"Phường: {WARD}" in shown
        assert shown.count(":30") >= 10 and "Các phiên bản" in shown

        # refused by the API's rules, shown with its reason; nothing saved
        bad = await person.post("/broadcasts/new", data=form(clip, recurrence="rrule", rrule="FREQ=MINUTELY"))
        assert bad.status_code == 422 and "FREQ=SECONDLY and MINUTELY are refused" in bad.text
        shape = await person.post("/broadcasts/new", data=form(clip, clip_id="abc"))
        assert shape.status_code == 422 and "Bản âm thanh:" in text_of(shape.text)

        # edit: the form holds the stored broadcast; weekly on two days, a new version
        edit = await person.get(f"/broadcasts/{news_id}/edit")
        assert edit.status_code == 200 and 'name="version" value="1"' in edit.text
        assert '<option value="daily" selected>' in edit.text
        weekly = form(clip, recurrence="weekly", days=["MO", "WE"], start=tomorrow(7, 0), version="1", step="save",
                      exceptions="2031-01-01\n2031-01-02")
        edited = await person.post(f"/broadcasts/{news_id}/edit", data=weekly)
        assert edited.status_code == 303, text_of(edited.text)
        await news.refresh_from_db()
        assert (news.version, news.rrule, news.exceptions) == (2, "FREQ=WEEKLY;BYDAY=MO,WE",
                                                                ["2031-01-01", "2031-01-02"])
        stale = await person.post(f"/broadcasts/{news_id}/edit", data=weekly)
        assert stale.status_code == 409 and "at version 2" in stale.text
        again = await person.get(f"/broadcasts/{news_id}/edit")
        assert 'value="MO" checked' in again.text and 'value="TU" checked' not in again.text

        # the week calendar places it; a cancelled one is not shown
        week = await person.get("/broadcasts", params={"week": tomorrow(0)[:10]})
        assert f'data-broadcast="{news_id}"' in week.text and f'data-broadcast="{alert_id}"' in week.text
        cancelled = await person.post(f"/broadcasts/{alert_id}/cancel")
        assert cancelled.status_code == 303 and cancelled.headers["location"].endswith("done=cancelled")
        assert (await Broadcast.get(id=alert_id)).status == BroadcastStatus.CANCELLED
        week = await person.get("/broadcasts", params={"week": tomorrow(0)[:10]})
        assert f'class="occ level-priority" href="/broadcasts/{alert_id}"' not in week.text
        twice = await person.post(f"/broadcasts/{alert_id}/cancel")
        assert twice.status_code == 409 and "already cancelled" in twice.text

        repeated = await person.post(f"/broadcasts/{alert_id}/repeat")
        assert repeated.status_code == 303, text_of(repeated.text)
        copy = await Broadcast.get(id=int(repeated.headers["location"].split("/")[2].split("?")[0]))
        assert (copy.repeat_of, copy.level.value, copy.rrule) == (alert_id, "priority", "")

        english = await person.get(f"/broadcasts/{news_id}", params={"lang": "en"})
        assert "Weekly on Monday, Wednesday" in text_of(english.text) and "Versions" in english.text
        assert (await person.get("/broadcasts/999999")).status_code == 404
        assert (await person.get(f"/broadcasts/{alert_id}/edit")).status_code == 409

    actions = [a.action for a in await AuditEntry.filter(action__startswith="broadcast.").order_by("id")]
    assert actions == ["broadcast.create", "broadcast.create", "broadcast.edit", "broadcast.cancel",
                       "broadcast.repeat"]


async def test_who_may_change_and_cross_site_refusal(fleet: httpx.AsyncClient) -> None:
    await speakers(fleet)
    clip = await spoken_clip(fleet)
    made = await fleet.post("/api/broadcasts", json={"title": "tin", "clip_id": clip, "targets": {"wards": [WARD]},
                                                     "start": tomorrow(6, 30)})
    bid = made.json()["broadcast"]["id"]
    base = str(fleet.base_url).rstrip("/")
    async with httpx.AsyncClient(base_url=base) as anonymous:
        for path in ("/broadcasts", f"/broadcasts/{bid}", "/broadcasts/new", "/audio", "/broadcasts/emergency"):
            answer = await anonymous.get(path)
            assert (answer.status_code, answer.headers["location"]) == (303, "/login"), path
    for role in (Role.READ_ONLY, Role.OPS, Role.TECHNICIAN):
        async with browser(fleet, role) as reader:
            week = await reader.get("/broadcasts")
            assert week.status_code == 200 and "/broadcasts/new" not in week.text.split("<main>")[1]
            assert "/broadcasts/emergency" not in week.text  # not even in the nav
            detail = await reader.get(f"/broadcasts/{bid}")
            assert detail.status_code == 200 and 'id="cancel-button"' not in detail.text
            library = await reader.get("/audio")
            assert library.status_code == 200 and 'id="upload-form"' not in library.text and "<audio" in library.text
            for path in ("/broadcasts/new", f"/broadcasts/{bid}/edit", "/broadcasts/emergency"):
                refused = await reader.get(path)
                assert refused.status_code == 403 and role.value in refused.text, (role, path)
            for path, data in ((f"/broadcasts/{bid}/cancel", {}), (f"/broadcasts/{bid}/repeat", {}),
                               ("/broadcasts/new", form(clip, step="save")),
                               ("/audio/tts", {"title": "x", "text": "y"}), (f"/audio/{clip}/delete", {})):
                refused = await reader.post(path, data=data)
                assert refused.status_code == 403, (role, path, refused.text)
    async with browser(fleet, Role.IOC_OPERATOR) as operator:
        # a form another origin submits carries the cookie but not the fleet's Origin
        for headers in ({"Origin": "http://127.0.0.1:1"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": ""}):
            forged = await operator.post(f"/broadcasts/{bid}/cancel", headers=headers)
            assert forged.status_code == 403 and "cross-site request refused" in forged.text
        assert (await Broadcast.get(id=bid)).status == BroadcastStatus.ACTIVE
        assert (await operator.post(f"/broadcasts/{bid}/cancel")).status_code == 303
    assert (await Broadcast.get(id=bid)).status == BroadcastStatus.CANCELLED


async def test_the_audio_library_page(fleet: httpx.AsyncClient, tmp_path: Path) -> None:
    wav = tone(tmp_path / "chuong.wav", 2.0)
    async with browser(fleet, Role.IOC_OPERATOR) as person:
        empty = await person.get("/audio")
        assert empty.status_code == 200 and "Thư viện chưa có bản âm thanh nào" in empty.text
        assert "media-src 'self'" in empty.headers["content-security-policy"]
        with wav.open("rb") as file:
            uploaded = await person.post("/audio/upload", files={"file": ("chuong.wav", file, "audio/wav")},
                                         data={"title": "Chuông báo"})
        assert uploaded.status_code == 303 and uploaded.headers["location"] == "/audio?done=uploaded"
        spoken = await person.post("/audio/tts", data={"title": "Thông báo", "text": "Xin chào bà con", "voice": "vi"})
        assert spoken.status_code == 303, text_of(spoken.text)
        listed = await person.get("/audio", params={"done": "spoken"})
        shown = text_of(listed.text)
        assert "Đã tạo bản đọc từ văn bản." in shown and "Chuông báo" in shown and "Xin chào bà con" in shown
        clips = (await fleet.get("/api/audio")).json()
        for clip in clips:
            src = f'src="/api/audio/{clip["id"]}/file?kind=pi"'
            assert src in listed.text
            player = await person.get(f"/api/audio/{clip['id']}/file", params={"kind": "pi"})
            assert player.status_code == 200 and player.headers["content-type"] == "audio/wav"
        assert re.search(r"Đã dùng \d+\.\d MB trên 2048 MB cho phép · 2 bản âm thanh", shown)

        # refusals: the API's reason on the page, nothing stored
        empty_file = tmp_path / "empty.wav"
        empty_file.write_bytes(b"")
        with empty_file.open("rb") as file:
            refused = await person.post("/audio/upload", files={"file": ("empty.wav", file, "audio/wav")},
                                        data={"title": "rỗng"})
        assert refused.status_code == 422 and "the file is empty" in refused.text
        with wav.open("rb") as file:
            duplicate = await person.post("/audio/upload", files={"file": ("again.wav", file, "audio/wav")},
                                          data={"title": "lần nữa"})
        assert duplicate.status_code == 409 and "already in the library" in duplicate.text
        blank = await person.post("/audio/tts", data={"title": "x", "text": "", "voice": "vi"})
        assert blank.status_code == 422 and "Văn bản:" in text_of(blank.text)
        assert len((await fleet.get("/api/audio")).json()) == 2

        deleted = await person.post(f"/audio/{clips[0]['id']}/delete")
        assert deleted.status_code == 303 and deleted.headers["location"] == "/audio?done=deleted"
        assert [c["id"] for c in (await fleet.get("/api/audio")).json()] == [clips[1]["id"]]
        gone = await person.post(f"/audio/{clips[0]['id']}/delete")
        assert gone.status_code == 404
    actions = {a.action for a in await AuditEntry.filter(action__startswith="audio.")}
    assert actions == {"audio.upload", "audio.tts", "audio.delete"}


async def test_the_emergency_button_names_the_speakers_before_it_sends(fleet: httpx.AsyncClient) -> None:
    await speakers(fleet)
    clip = await spoken_clip(fleet, "Có cháy ở chợ, bà con tránh xa khu vực")
    async with browser(fleet, Role.IOC_OPERATOR) as person:
        picked = await person.get("/broadcasts/emergency")
        assert picked.status_code == 200 and "Tất cả các phường (3 loa)" in picked.text
        choice = {"title": "Cháy chợ", "clip_id": str(clip), "wards": ["*"], "in_force_min": "30"}
        confirm = await person.post("/broadcasts/emergency", data={**choice, "step": "confirm"})
        assert confirm.status_code == 200, text_of(confirm.text)
        shown = text_of(confirm.text)
        assert "Phát khẩn cấp tới 3 loa ở 2 phường?" in shown and "Hiện có 0 trên 3 loa đang trực tuyến" in shown
        assert 'id="send-button"' in confirm.text and "PHÁT NGAY tới 3 loa" in shown
        assert await Broadcast.all().count() == 0  # the confirmation page sends nothing
        one_ward = await person.post("/broadcasts/emergency", data={**choice, "wards": ["Tân Bình"], "step": "confirm"})
        assert "Phát khẩn cấp tới 1 loa ở 1 phường?" in text_of(one_ward.text)
        none = await person.post("/broadcasts/emergency", data={**choice, "wards": [], "step": "confirm"})
        assert none.status_code == 422 and "Hãy chọn ít nhất một phường." in none.text
        unconfirmed = await person.post("/broadcasts/emergency", data={**choice, "step": "send"})
        assert unconfirmed.status_code == 422 and "confirm=true" in unconfirmed.text
        assert await Broadcast.all().count() == 0

        sent = await person.post("/broadcasts/emergency", data={**choice, "step": "send", "confirm": "yes"})
        assert sent.status_code == 303, text_of(sent.text)
        bid = int(sent.headers["location"].split("/")[2].split("?")[0])
        emergency = await Broadcast.get(id=bid)
        assert (emergency.level.value, emergency.title, emergency.in_force_until is not None) == (
            "emergency", "Cháy chợ", True)
        assert sorted(emergency.targets["wards"]) == ["Tân Bình", WARD]
        detail = text_of((await person.get(sent.headers["location"])).text)
        assert "Đã phát lệnh khẩn cấp." in detail and "Lệnh phát khẩn cấp tới từng loa" in detail
        assert "3 gửi qua lịch" in detail  # all three are offline: their desired state carries it
    assert await AuditEntry.filter(action="broadcast.emergency", target=str(bid)).exists()


async def test_the_broadcast_page_shows_the_delivery_summary_and_receipts(fleet: httpx.AsyncClient) -> None:
    await speakers(fleet)
    clip = await spoken_clip(fleet)
    made = await fleet.post("/api/broadcasts", json={"title": "Bản tin sáng", "clip_id": clip, "rrule": "FREQ=DAILY",
                                                     "targets": {"wards": [WARD, "Tân Bình"]},
                                                     "start": tomorrow(6, 30)})
    bid = made.json()["broadcast"]["id"]
    # an occurrence that has passed, as the ingest and the sweep leave its receipts (their own tests:
    # test_broadcast_receipts*); the page shows what the receipts API says about them
    played_at = datetime.fromisoformat(tomorrow(6, 30)).replace(tzinfo=HCM) - timedelta(days=2)
    entry = f"b{bid}.{int(played_at.timestamp())}"
    for device_id, state, reason, started in (("spk-a1", ReceiptState.COMPLETED, None, timedelta(milliseconds=140)),
                                              ("spk-a2", ReceiptState.FAILED, "bad clip: short header", None),
                                              ("spk-b1", ReceiptState.MISSED, None, None)):
        await BroadcastReceipt.create(broadcast_id=bid, device_id=device_id, entry_id=entry, occurrence_at=played_at,
                                      version=1, state=state, reason=reason,
                                      started_at=played_at + started if started else None)
    await DeviceClock.create(device_id="spk-a1", offset_ms=730, flagged=True)
    async with browser(fleet, Role.READ_ONLY) as person:
        page = await person.get(f"/broadcasts/{bid}", params={"occurrence": played_at.isoformat()})
        assert page.status_code == 200
        shown = text_of(page.text)
        assert "Kết quả phát tới từng loa" in shown and "Lỗi theo nguyên nhân: bad clip 1" in shown
        assert re.search(r'id="receipts-played">1<', page.text) and re.search(r'id="receipts-failed">1<', page.text)
        rows = dict(re.findall(r'<tr class="receipt-([a-z_]+)" data-device="([a-z0-9-]+)"', page.text))
        assert {device: state for state, device in rows.items()} == {"spk-a1": "completed", "spk-a2": "failed",
                                                                      "spk-b1": "missed"}
        assert "140 ms" in shown and "730 ms vượt ngưỡng" in shown and "bad clip: short header" in shown
        assert f'href="/api/broadcasts/{bid}/receipts.csv"' in page.text
        csv_link = re.search(r'id="receipts-csv-occurrence" href="([^"]+)"|href="([^"]+)" id="receipts-csv-occurrence"',
                             page.text)
        assert csv_link is not None
        exported = await person.get(html.unescape(csv_link.group(1) or csv_link.group(2)))
        assert exported.status_code == 200 and exported.text.count("\r\n") == 4  # the header and three speakers
        english = text_of((await person.get(f"/broadcasts/{bid}", params={"lang": "en",
                                                                           "occurrence": played_at.isoformat()})).text)
        assert "Delivery per speaker" in english and "Failed by reason: bad clip 1" in english
    empty = await fleet.post("/api/broadcasts", json={"title": "x", "clip_id": clip, "targets": {"devices": ["spk-a1"]},
                                                      "start": tomorrow(8, 0)})
    async with browser(fleet, Role.READ_ONLY) as person:
        # no receipt yet for a broadcast whose speaker has not been sent it: no panel
        page = await person.get(f"/broadcasts/{empty.json()['broadcast']['id']}")
        assert page.status_code == 200
        if not await BroadcastReceipt.filter(broadcast_id=empty.json()["broadcast"]["id"]).exists():
            assert 'id="receipts"' not in page.text
