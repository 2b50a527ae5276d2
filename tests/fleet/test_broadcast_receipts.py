"""Receipts from the ingest (issue 12, docs/broadcasts.md "Receipts"): real database (SQLite and
PostgreSQL), real ingest (apply_batch) with messages checked by the contract, the sweep with `now`."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleet.broadcast import receipts
from fleet.broadcast.models import BroadcastReceipt, DeviceClock, ReceiptState
from fleet.db import database
from fleet.models import Device
from fleet.settings import Settings
from tests.fleet.broadcast_kit import Speaker, broadcast, delivery, entry_id, ingest, later, ms, receipt

T0 = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)  # an occurrence
S = ReceiptState


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[None]:
    async with database(Settings(database_url=database_url)):
        yield


async def _state(device_id: str, entry: str) -> BroadcastReceipt:
    return await BroadcastReceipt.get(device_id=device_id, entry_id=entry)


async def test_applied_document_delivers_then_playback_starts_and_completes_forward_only(db: None) -> None:
    b = await broadcast()
    spk = Speaker()
    first, second = T0, later(T0, hours=1)
    e1, e2 = entry_id(b.id, first), entry_id(b.id, second)
    await ingest([spk.birth(later(T0, hours=-2))], later(T0, hours=-2))
    await receipt(b, spk.device_id, first)
    await receipt(b, spk.device_id, second)
    await delivery(spk.device_id, [e1, e2], version=5)
    now = later(T0, minutes=-30)
    await ingest([spk.reported(now, 4)], now)  # an older document applied: not this one
    assert (await _state(spk.device_id, e1)).state == S.PENDING
    await ingest([spk.reported(now, 5)], now)
    got = await _state(spk.device_id, e1)
    assert got.state == S.DELIVERED and got.delivered_at == now
    assert (await _state(spk.device_id, e2)).state == S.DELIVERED
    # the start and the end: the event id is <entry id>@<occurrence ms>
    await ingest([spk.playback(later(T0, seconds=0.2), f"{e1}@{ms(first)}", "start", "started")],
                 later(T0, seconds=0.3))
    got = await _state(spk.device_id, e1)
    assert got.state == S.STARTED and got.device_started_ms == ms(T0) + 200
    await ingest([spk.reported(later(T0, seconds=1), 6)], later(T0, seconds=1))  # a late delivered
    assert (await _state(spk.device_id, e1)).state == S.STARTED  # stays started
    await ingest([spk.playback(later(T0, seconds=5), f"{e1}@{ms(first)}", "end", "completed")],
                 later(T0, seconds=5))
    got = await _state(spk.device_id, e1)
    assert got.state == S.COMPLETED and got.ended_at is not None
    # a repeated start (a redelivered message) and a failure after the end change nothing
    await ingest([spk.playback(later(T0, seconds=6), f"{e1}@{ms(first)}", "start", "started"),
                  spk.playback(later(T0, seconds=6), f"{e1}@{ms(first)}", "end", "failed", "stopped")],
                 later(T0, seconds=6))
    got = await _state(spk.device_id, e1)
    assert got.state == S.COMPLETED and got.reason is None
    assert (await _state(spk.device_id, e2)).state == S.DELIVERED


async def test_a_rejected_document_is_not_delivered_with_the_nodes_reason(db: None) -> None:
    b = await broadcast()
    spk = Speaker()
    e1, e2 = entry_id(b.id, T0), entry_id(b.id, later(T0, hours=1))
    await receipt(b, spk.device_id, T0)
    await receipt(b, spk.device_id, later(T0, hours=1), S.DELIVERED)  # in the version it still runs
    await delivery(spk.device_id, [e1, e2], version=3)
    now = later(T0, hours=-1)
    await ingest([spk.reported(now, 3, "rejected", "speaker: schedule: at most 32 entries")], now)
    got = await _state(spk.device_id, e1)
    assert got.state == S.NOT_DELIVERED and got.reason == "rejected: speaker: schedule: at most 32 entries"
    assert (await _state(spk.device_id, e2)).state == S.DELIVERED


async def test_failures_missed_and_emergency_commands(db: None) -> None:
    b = await broadcast()
    spk = Speaker(kind="pi")
    at = [later(T0, minutes=10 * i) for i in range(5)]
    for moment in at:
        await receipt(b, spk.device_id, moment, S.DELIVERED)
    e = [entry_id(b.id, moment) for moment in at]
    now = later(T0, hours=1)
    await ingest([
        spk.playback(at[0], f"{e[0]}@{ms(at[0])}", "start", "started"),
        spk.playback(later(at[0], seconds=2), f"{e[0]}@{ms(at[0])}", "end", "failed", "preempted"),
        spk.playback(at[1], f"{e[1]}@{ms(at[1])}", "once", "failed", "no clip"),
        spk.playback(at[2], f"{e[2]}@{ms(at[2])}", "once", "failed", "missed"),
        spk.playback(at[3], f"{e[3]}@{ms(at[3])}", "once", "failed", "=HYPERLINK(\"http://x\")"),
        spk.playback(at[4], e[4], "start", "started"),  # a speaker.broadcast command: the entry id itself
    ], now)
    rows = {r.entry_id: r for r in await BroadcastReceipt.filter(device_id=spk.device_id)}
    assert (rows[e[0]].state, rows[e[0]].reason) == (S.FAILED, "preempted")
    assert rows[e[0]].started_at is not None and rows[e[0]].ended_at is not None
    assert (rows[e[1]].state, rows[e[1]].reason) == (S.FAILED, "no clip")
    assert (rows[e[2]].state, rows[e[2]].reason) == (S.MISSED, "missed")
    assert rows[e[3]].state == S.FAILED
    assert rows[e[4]].state == S.STARTED and rows[e[4]].started_at == at[4]


async def test_unknown_playback_ids_are_counted_and_never_raise(db: None) -> None:
    b = await broadcast()
    spk = Speaker()
    await receipt(b, spk.device_id, T0, S.DELIVERED)
    before = receipts.COUNTS.unknown
    now = later(T0, seconds=1)
    result = await ingest([
        spk.playback(T0, "news-1", "start", "started"),  # not an entry id
        spk.playback(T0, "b99999.1764546600@1764546600000", "start", "started"),  # no receipt row
        spk.playback(T0, f"b{b.id}.{int(T0.timestamp())}@x", "start", "started"),  # a bad occurrence
        spk.playback(T0, f"{entry_id(b.id, T0)}@{ms(T0)}", "start", "started"),  # the known one
    ], now)
    assert result.stored == 4  # the events are stored as events whatever the receipts make of them
    assert receipts.COUNTS.unknown == before + 3
    assert (await _state(spk.device_id, entry_id(b.id, T0))).state == S.STARTED


async def test_the_sweep_marks_not_delivered_and_missed_within_its_bounds(db: None) -> None:
    b = await broadcast()
    online, offline = Speaker(), Speaker()
    born = later(T0, hours=-3)
    await ingest([online.birth(born), offline.birth(born)], born)
    await Device.filter(id=offline.device_id).update(online=False)
    bound = receipts.late_bound(60)  # 120 s + the health period the births declare (60 s)
    assert bound == timedelta(seconds=180)
    pending = await receipt(b, online.device_id, T0)
    waiting = await receipt(b, online.device_id, later(T0, minutes=1), S.DELIVERED)
    ready = await receipt(b, online.device_id, later(T0, minutes=2), S.CLIP_READY)
    started = await receipt(b, online.device_id, later(T0, minutes=3), S.STARTED)
    away = await receipt(b, offline.device_id, T0, S.DELIVERED)
    away_pending = await receipt(b, offline.device_id, later(T0, minutes=1))
    # within the bound: nothing moves
    assert await receipts.sweep(later(T0, seconds=179)) == (0, 0)
    assert await receipts.sweep(later(T0, seconds=181)) == (1, 0)  # the pending one; the delivered is later
    assert (await BroadcastReceipt.get(id=pending.id)).reason == receipts.NEVER_APPLIED
    now = later(T0, minutes=10)
    assert await receipts.sweep(now) == (1, 2)
    states = {r.id: (r.state, r.reason) for r in await BroadcastReceipt.all()}
    assert states[pending.id][0] == S.NOT_DELIVERED
    assert states[waiting.id] == (S.MISSED, receipts.NO_START)
    assert states[ready.id] == (S.MISSED, receipts.NO_START)
    assert states[started.id][0] == S.STARTED  # it started: its end may still come
    assert states[away.id][0] == S.DELIVERED  # offline: its events may still come when it is back
    assert states[away_pending.id][0] == S.NOT_DELIVERED  # never applied: offline or not
    # back online lately: it gets the bound since its birth to send what it queued
    back = later(T0, minutes=9)
    await ingest([offline.birth(back)], back)
    assert await receipts.sweep(later(back, seconds=170)) == (0, 0)
    assert await receipts.sweep(later(back, seconds=190)) == (0, 1)
    assert (await BroadcastReceipt.get(id=away.id)).state == S.MISSED
    # a late start after `missed` changes nothing
    await ingest([offline.playback(T0, f"{entry_id(b.id, T0)}@{ms(T0)}", "start", "started")], later(back, hours=1))
    assert (await BroadcastReceipt.get(id=away.id)).state == S.MISSED


async def test_summary_counts_in_all_and_per_occurrence(db: None) -> None:
    b = await broadcast()
    first, second = T0, later(T0, days=1)
    states = [S.COMPLETED, S.COMPLETED, S.STARTED, S.FAILED, S.FAILED, S.FAILED, S.MISSED, S.NOT_DELIVERED,
              S.SKIPPED, S.PENDING, S.DELIVERED]
    reasons = {3: "bad clip: short header", 4: "bad clip: not a WAV", 5: "busy"}
    for n, state in enumerate(states):
        await receipt(b, f"spk-sum-{n:02d}", first, state, reason=reasons.get(n))
    await receipt(b, "spk-sum-00", second, S.PENDING)
    await Device.create(id="spk-sum-10", online=False)  # the delivered one's speaker is offline
    await Device.create(id="spk-sum-09", online=True)  # the first pending one's is online
    got = await receipts.summary(b.id)
    assert got["total"] == 12 and got["played"] == 2 and got["started"] == 1 and got["failed"] == 3
    assert got["failed_by_reason"] == {"bad clip": 2, "busy": 1}
    assert (got["missed"], got["not_delivered"], got["skipped"], got["pending"], got["delivered"]) == (1, 1, 1, 2, 1)
    assert got["offline"] == 2  # the delivered one, and the second occurrence's (a speaker never heard)
    occ = got["occurrences"]
    assert [o["occurrence_at"] for o in occ] == [first, second]
    assert occ[0]["entry_id"] == entry_id(b.id, first) and occ[0]["total"] == 11 and occ[0]["played"] == 2
    assert occ[1]["total"] == 1 and occ[1]["pending"] == 1 and occ[1]["offline"] == 1
    empty = await receipts.summary(b.id + 1000)
    assert empty["total"] == 0 and empty["occurrences"] == []


async def test_started_times_are_corrected_by_the_speakers_clock(db: None) -> None:
    b = await broadcast()
    spk = Speaker(offset_ms=2000)  # its clock is 2 s ahead
    start = later(T0, hours=-1)
    await ingest([spk.birth(start)], later(start, seconds=0.02))
    for i in range(5):  # a few messages to sample from, each 20 ms on the way
        moment = later(start, minutes=i)
        await ingest([spk.health(moment)], later(moment, seconds=0.02))
    clock = await DeviceClock.get(device_id=spk.device_id)
    assert clock.offset_ms == 1980  # its offset less the least delay seen
    await receipt(b, spk.device_id, T0, S.DELIVERED)
    played = later(T0, seconds=0.1)  # the fleet's time it started at
    await ingest([spk.playback(played, f"{entry_id(b.id, T0)}@{ms(T0)}", "start", "started")],
                 later(played, seconds=0.05))
    got = await _state(spk.device_id, entry_id(b.id, T0))
    assert got.device_started_ms == ms(played) + 2000  # the node's own stamp, as it sent it
    assert got.offset_ms == 1980
    assert got.started_at == later(played, seconds=0.02)  # within the delay the estimate cannot see


async def test_the_csv_is_read_in_chunks_and_bounded(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    b = await broadcast()
    for n in range(7):
        await receipt(b, f"spk-csv-{n}", T0, S.SKIPPED, reason="quiet hours")
    monkeypatch.setattr(receipts, "CSV_CHUNK", 2)  # several chunks of a few rows
    parts = [p async for p in receipts.csv_rows(b.id, rows_max=5)]
    lines = "".join(parts).splitlines()
    assert len(parts) == 1 + 3 and len(lines) == 1 + 5  # header, chunks of 2, 2, 1: five rows at most
    assert lines[1].split(",")[3] == "spk-csv-0"
    assert receipts.csv_cell(-35) == -35 and receipts.csv_cell("-35") == "'-35"
    assert receipts.csv_cell(None) == "" and receipts.csv_cell(True) == "true"
    assert receipts.csv_cell(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"


async def test_an_emergency_in_force_is_swept_only_after_its_end(db: None) -> None:
    b = await broadcast()
    await b.__class__.filter(id=b.id).update(in_force_until=later(T0, minutes=30))
    spk = Speaker()
    await ingest([spk.birth(later(T0, hours=-1))], later(T0, hours=-1))
    away = Speaker()  # never heard: offline
    sent = await receipt(b, spk.device_id, T0, S.DELIVERED, emergency=True)
    unsent = await receipt(b, away.device_id, T0, S.PENDING, emergency=True)
    assert await receipts.sweep(later(T0, minutes=20)) == (0, 0)  # in force: it may still play
    assert await receipts.sweep(later(T0, minutes=32)) == (0, 0)  # ended, within the bound after it
    assert await receipts.sweep(later(T0, minutes=34)) == (1, 1)
    assert (await BroadcastReceipt.get(id=sent.id)).state == S.MISSED
    assert (await BroadcastReceipt.get(id=unsent.id)).state == S.NOT_DELIVERED


async def test_a_failing_receipt_update_costs_the_ingest_nothing(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook runs after the batch's commit: a failure there is logged and counted, the messages stay stored
    and the next batch's receipts are applied again."""
    from fleet.broadcast import ingest_hook
    from fleet.models import EventRecord

    b = await broadcast()
    spk = Speaker()
    e1 = entry_id(b.id, T0)
    await ingest([spk.birth(later(T0, hours=-2))], later(T0, hours=-2))
    await receipt(b, spk.device_id, T0, S.DELIVERED)

    async def broken(*_: object) -> None:
        raise RuntimeError("the receipts' table is gone")

    failures = ingest_hook.FAILURES["batches"]
    real = receipts.observe
    monkeypatch.setattr(receipts, "observe", broken)
    start = spk.playback(later(T0, seconds=0.2), f"{e1}@{ms(T0)}", "start", "started")
    result = await ingest([start], later(T0, seconds=0.3))
    assert result.stored == 1 and not result.refused
    assert await EventRecord.filter(device_id=spk.device_id, type="playback").count() == 1
    assert ingest_hook.FAILURES["batches"] == failures + 1
    assert (await _state(spk.device_id, e1)).state == S.DELIVERED
    monkeypatch.setattr(receipts, "observe", real)
    await ingest([spk.playback(later(T0, seconds=5), f"{e1}@{ms(T0)}", "end", "completed")], later(T0, seconds=5))
    assert (await _state(spk.device_id, e1)).state == S.COMPLETED
