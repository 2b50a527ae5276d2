"""The receipts API on the real fleet (issue 12): the list with its filters and X-Total-Count, the
summary, the CSV export (RFC 4180 quoting, formula cells guarded), refusals."""

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx

from fleet.auth.roles import Role
from fleet.broadcast.models import BroadcastReceipt, DeviceClock, ReceiptState
from tests.fleet.broadcast_kit import broadcast, entry_id, receipt
from tests.support.fleet import token_for
from tests.support.wait import async_wait_for

S = ReceiptState
HOSTILE = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+1", "-2+3", "@SUM(A1)",
           "bad clip: \"quoted\", with comma\nand line"]


async def test_receipts_list_summary_and_csv(fleet: httpx.AsyncClient) -> None:
    # occurrences a day ahead: the fleet's own sweep (running on the real clock) leaves them be
    first = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    second = first + timedelta(hours=1)
    b = await broadcast()
    devices = [f"spk-api-{n:02d}" for n in range(6)]
    await receipt(b, devices[0], first, S.COMPLETED, started_at=first + timedelta(milliseconds=150),
                  device_started_ms=int(first.timestamp() * 1000) + 1150, offset_ms=1000)
    for n, reason in enumerate(HOSTILE[:4], start=1):
        await receipt(b, devices[n], first, S.FAILED, reason=reason)
    await receipt(b, devices[5], first, S.FAILED, reason=HOSTILE[4])
    await receipt(b, devices[0], second, S.PENDING)
    await DeviceClock.create(device_id=devices[0], offset_ms=1000, samples=[1000, 990, 980], flagged=True)

    listed = await fleet.get(f"/api/broadcasts/{b.id}/receipts")
    assert listed.status_code == 200 and listed.headers["X-Total-Count"] == "7"
    rows = listed.json()
    assert [(r["device_id"], r["occurrence_at"][:19]) for r in rows][:2] == [
        (devices[0], first.isoformat()[:19]), (devices[1], first.isoformat()[:19])]
    top = rows[0]
    assert top["entry_id"] == entry_id(b.id, first) and top["state"] == "completed"
    assert top["start_delay_ms"] == 150 and top["offset_ms"] == 1000
    assert top["clock"] == {"offset_ms": 1000, "flagged": True, "set_time_skew_ms": None}
    assert rows[1]["clock"] is None

    async def total(**params: str | int) -> int:
        response = await fleet.get(f"/api/broadcasts/{b.id}/receipts", params=params)
        assert response.status_code == 200, response.text
        return int(response.headers["X-Total-Count"])

    assert await total(state="failed") == 5
    assert await total(device=devices[0]) == 2
    assert await total(occurrence=second.isoformat()) == 1
    assert await total(occurrence=int(first.timestamp())) == 6  # Unix seconds, as in the entry id
    assert await total(occurrence=first.replace(tzinfo=None).isoformat()) == 6  # no offset: UTC
    page = await fleet.get(f"/api/broadcasts/{b.id}/receipts", params={"limit": 2, "offset": 5})
    assert [r["device_id"] for r in page.json()] == [devices[5], devices[0]]

    summary = (await fleet.get(f"/api/broadcasts/{b.id}/summary")).json()
    assert (summary["total"], summary["played"], summary["failed"], summary["pending"]) == (7, 1, 5, 1)
    assert summary["failed_by_reason"]["bad clip"] == 1 and sum(summary["failed_by_reason"].values()) == 5
    assert [o["entry_id"] for o in summary["occurrences"]] == [entry_id(b.id, first), entry_id(b.id, second)]
    assert summary["offline"] == 1  # the pending one: its speaker is not online (never heard)

    exported = await fleet.get(f"/api/broadcasts/{b.id}/receipts.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["X-Total-Count"] == "7"
    assert "attachment" in exported.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(exported.text)))
    header, body = table[0], table[1:]
    assert header[:6] == ["broadcast_id", "entry_id", "occurrence_at", "device_id", "state", "reason"]
    assert len(body) == 7
    by_device = {(r[3], r[2]): dict(zip(header, r, strict=True)) for r in body}
    stamp = first.isoformat().replace("+00:00", "Z")
    done = by_device[(devices[0], stamp)]
    assert done["state"] == "completed" and done["clock_offset_ms"] == "1000" and done["clock_flagged"] == "true"
    assert done["start_delay_ms"] == "150"
    reasons = [by_device[(d, stamp)]["reason"] for d in devices[1:]]
    assert reasons[:4] == ["'" + r for r in HOSTILE[:4]]  # a spreadsheet shows them as text
    assert reasons[4] == HOSTILE[4]  # commas, quotes and the line break survive the quoting

    one = await fleet.get(f"/api/broadcasts/{b.id}/receipts.csv", params={"state": "pending"})
    assert len(list(csv.reader(io.StringIO(one.text)))) == 2 and one.headers["X-Total-Count"] == "1"

    # a reader may read; refusals
    reader = await token_for(fleet, Role.READ_ONLY)
    as_reader = await fleet.get(f"/api/broadcasts/{b.id}/summary", headers={"Authorization": f"Bearer {reader}"})
    assert as_reader.status_code == 200
    async with httpx.AsyncClient(base_url=fleet.base_url) as nobody:
        for path in ("receipts", "summary", "receipts.csv"):
            assert (await nobody.get(f"/api/broadcasts/{b.id}/{path}")).status_code == 401
        assert (await nobody.get("/api/speakers/clocks")).status_code == 401
    for path in ("receipts", "summary", "receipts.csv"):
        assert (await fleet.get(f"/api/broadcasts/{b.id + 1000}/{path}")).status_code == 404
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": 2**31}, {"device": "Bad Id"}, {"state": "played"},
                   {"occurrence": "yesterday"}):
        response = await fleet.get(f"/api/broadcasts/{b.id}/receipts", params=params)
        assert response.status_code == 422, params


async def test_the_fleets_worker_sweeps_receipts(fleet: httpx.AsyncClient) -> None:
    b = await broadcast()
    passed = datetime.now(UTC) - timedelta(minutes=10)
    row = await receipt(b, "spk-api-sweep", passed)  # pending: never applied

    async def swept() -> bool:
        response = await fleet.get(f"/api/broadcasts/{b.id}/receipts", params={"state": "not_delivered"})
        return response.headers["X-Total-Count"] == "1"

    await async_wait_for(swept, timeout=60, what="the sweep (every 10 s on the fleet's worker)")
    assert (await BroadcastReceipt.get(id=row.id)).reason == "never applied before it passed"

