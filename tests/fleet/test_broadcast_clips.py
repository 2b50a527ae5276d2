"""Clips to the speakers on a real fleet and broker (SQLite and PostgreSQL): a wanted clip goes out as
`speaker.clip_fetch` with a tokenised URL that a real HTTP GET downloads (length and SHA-256 checked
by the stand-in node, as the nodes do); the answer makes the row ready and the receipts clip_ready;
no answer is retried after a growing delay, up to a bound, and a birth starts afresh; `over budget`
is final (until the speaker's next birth) and fails the receipts; an ESP32 is never handed an
https:// URL. Times are passed to the tick (no sleeping)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from fleet.broadcast import clips
from fleet.broadcast.clips import ClipSender
from fleet.broadcast.emergency import Emergencies, _registered
from fleet.broadcast.models import BroadcastReceipt, ReceiptState, SpeakerClip
from fleet.models import Command
from fleet.runtime import Runtime
from tests.fleet.audio_kit import audio_fleet
from tests.fleet.speaker_sim import DOWNLOAD, Node, speakers
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

WARD = "Phường 1"


def part(http: httpx.AsyncClient) -> Emergencies:
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.broadcasts is not None
    runtime.broadcasts.tick_s = 3600  # the test drives the ticks with its own times (nudges still run one)
    return _registered[runtime.broadcasts]


async def a_clip(http: httpx.AsyncClient, text: str = "Thông báo cúp nước") -> dict[str, Any]:
    made = await http.post("/api/audio/tts", json={"title": "tin", "text": text}, timeout=60)
    assert made.status_code == 201, made.text
    return dict(made.json())


async def a_broadcast(http: httpx.AsyncClient, clip_id: int, devices: list[str]) -> tuple[int, datetime]:
    start = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    made = await http.post("/api/broadcasts", json={"title": "water", "clip_id": clip_id, "start": start.isoformat(),
                                                    "targets": {"devices": devices}, "confirm": True})
    assert made.status_code == 201, made.text
    return int(made.json()["broadcast"]["id"]), start


async def receipt(broadcast_id: int, start: datetime, device_id: str) -> BroadcastReceipt:
    """The receipt of the broadcast's occurrence on the speaker (made by delivery when it runs; made
    here when it has not yet)."""
    row, _ = await BroadcastReceipt.get_or_create(
        entry_id=f"b{broadcast_id}.{int(start.timestamp())}", device_id=device_id,
        defaults={"broadcast_id": broadcast_id, "version": 1, "occurrence_at": start})
    return row


async def register(http: httpx.AsyncClient, *nodes: Node) -> None:
    for node in nodes:
        made = await http.post("/api/devices", json={"id": node.device_id, "kind": node.kind, "ward": WARD})
        assert made.status_code == 201, made.text


async def row_in(device_id: str, state: str) -> SpeakerClip:
    async def reached() -> SpeakerClip | None:
        row = await SpeakerClip.get(device_id=device_id)
        return row if row.state == state else None

    found = await async_wait_for(reached, timeout=20, what=f"{device_id}'s clip {state}")
    assert found is not None
    return found


async def test_clip_fetch_downloads_and_readies_receipts(tmp_path: Path, mosquitto: Mosquitto,
                                                         database_url: str) -> None:
    async with audio_fleet(tmp_path, mosquitto, database_url) as http:
        sender: ClipSender = part(http).clips
        esp, pi = Node("spk-e1", "esp32"), Node("spk-p1", "pi")
        await register(http, esp, pi)
        clip = await a_clip(http)
        broadcast_id, start = await a_broadcast(http, clip["id"], [esp.device_id, pi.device_id])
        files = {f["kind"]: f for f in clip["files"]}
        async with speakers(mosquitto.port, [esp, pi]) as nodes:
            before = await receipt(broadcast_id, start, esp.device_id)
            now = datetime.now(UTC)
            for node in (esp, pi):
                await clips.want(node.device_id, files[node.kind]["sha256"], files[node.kind]["bytes"], now)
            await sender.tick(now)
            for node in (esp, pi):
                row = await row_in(node.device_id, "ready")
                variant = files[node.kind]
                assert (row.name, row.attempts, row.reason) == ("c" + variant["sha256"][:24], 0, None)
                assert node.downloaded == [(variant["sha256"], variant["bytes"])]
                (sent,) = nodes.commands(node.device_id, "speaker.clip_fetch")
                args = sent["args"]
                assert args["url"].startswith(f"{sender.base_url}/audio/files/{variant['sha256']}?t={node.device_id}~")
                assert (args["name"], args["sha256"], args["bytes"]) == (row.name, variant["sha256"], variant["bytes"])
                # recorded like any command, answered ok, without the token in the record
                recorded = await Command.get(id=sent["id"])
                assert (recorded.name, recorded.status) == ("speaker.clip_fetch", "ok")
                assert recorded.args["url"].endswith("?t=…") and "~" not in recorded.args["url"]
                # another device's token is refused for this file
                assert (await httpx.AsyncClient().get(
                    args["url"].replace(f"t={node.device_id}~", "t=spk-xx~"))).status_code == 403
            await before.refresh_from_db()
            assert before.state == ReceiptState.CLIP_READY and before.clip_ready_at is not None
            # a receipt made later for a clip the speaker already holds: the tick moves it
            second, start2 = await a_broadcast(http, clip["id"], [pi.device_id])
            later = await receipt(second, start2, pi.device_id)

            async def moved() -> bool:  # the worker's own nudged turn may be the one that moves it
                await sender.tick(datetime.now(UTC))
                await later.refresh_from_db()
                return later.state == ReceiptState.CLIP_READY

            assert await async_wait_for(moved, timeout=20, what="the later receipt clip_ready")
            # nothing is sent again for a ready clip
            await sender.tick(datetime.now(UTC) + timedelta(hours=1))
            assert len(nodes.commands(esp.device_id, "speaker.clip_fetch")) == 1
            assert nodes.errors == []


async def test_retry_bound_and_birth(tmp_path: Path, mosquitto: Mosquitto, database_url: str) -> None:
    async with audio_fleet(tmp_path, mosquitto, database_url) as http:
        sender = part(http).clips
        node = Node("spk-quiet", "esp32")
        await register(http, node)
        clip = await a_clip(http)  # no broadcast: the test alone asks for the clip
        variant = {f["kind"]: f for f in clip["files"]}["esp32"]
        answering = {"on": False}

        def policy(device_id: str, name: str, args: dict[str, Any]) -> tuple[str, Any] | None:
            return DOWNLOAD if answering["on"] else None

        async with speakers(mosquitto.port, [node], policy) as nodes:
            t0 = datetime.now(UTC)
            await clips.want(node.device_id, variant["sha256"], variant["bytes"], t0)
            await sender.tick(t0)
            row = await row_in(node.device_id, "sent")
            # (the worker may have sent it a moment before the test's tick: its deadline says when)
            assert row.next_try_at is not None and row.next_try_at >= t0 + timedelta(seconds=clips.ANSWER_WAIT_S)
            await async_wait_for(lambda: _count(nodes, node.device_id, 1), what="the first clip_fetch")
            # no answer by the deadline: a failed attempt, the next one 30 s later
            t1 = row.next_try_at
            await sender.tick(t1)
            row = await row_in(node.device_id, "wanted")
            assert (row.attempts, row.next_try_at) == (1, t1 + timedelta(seconds=clips.RETRY_FIRST_S))
            assert row.reason == f"no answer within {clips.ANSWER_WAIT_S} s"
            await sender.tick(t1 + timedelta(seconds=clips.RETRY_FIRST_S - 1))  # not yet
            assert (await SpeakerClip.get(id=row.id)).state == "wanted"
            # the second try is answered
            answering["on"] = True
            await sender.tick(t1 + timedelta(seconds=clips.RETRY_FIRST_S))
            row = await row_in(node.device_id, "ready")
            first, second = nodes.commands(node.device_id, "speaker.clip_fetch")
            assert first["id"] != second["id"] and row.attempts == 1

            # the growing delay, and the bound: the last attempt's failure gives up
            assert [clips.retry_delay(n).total_seconds() for n in range(1, 9)] == [
                30, 60, 120, 240, 480, 960, 1800, 1800]
            answering["on"] = False
            await SpeakerClip.filter(id=row.id).update(state="wanted", attempts=clips.MAX_ATTEMPTS - 1,
                                                       next_try_at=t0)
            await sender.tick(t0)
            row = await row_in(node.device_id, "sent")
            await sender.tick(t0 + timedelta(hours=1))
            row = await row_in(node.device_id, "failed")
            assert row.reason == f"gave up after {clips.MAX_ATTEMPTS} attempts: no answer within 90 s"
            await sender.tick(t0 + timedelta(days=2))
            # the third one was published before the row said `sent`; the speaker may get it a moment later
            await async_wait_for(lambda: _count(nodes, node.device_id, 3), what="the third clip_fetch")
            assert len(nodes.commands(node.device_id, "speaker.clip_fetch")) == 3
            # the speaker's next birth: tried afresh
            node.ses, node.seq = 2, 0
            await nodes.birth(node)
            row = await row_in(node.device_id, "wanted")
            assert row.attempts == 0


async def _count(nodes: Any, device_id: str, n: int) -> bool:
    return len(nodes.commands(device_id, "speaker.clip_fetch")) >= n


async def test_over_budget_is_final_and_https_refused(tmp_path: Path, mosquitto: Mosquitto,
                                                      database_url: str) -> None:
    async with audio_fleet(tmp_path, mosquitto, database_url) as http:
        sender = part(http).clips
        full, other = Node("spk-full", "esp32"), Node("spk-tls", "esp32")
        await register(http, full, other)
        clip = await a_clip(http)
        broadcast_id, start = await a_broadcast(http, clip["id"], [full.device_id])
        variant = {f["kind"]: f for f in clip["files"]}["esp32"]
        budget = f"over budget: 520000 + {variant['bytes']} > 524288 bytes"

        def policy(device_id: str, name: str, args: dict[str, Any]) -> tuple[str, Any] | None:
            return ("error", budget) if name == "speaker.clip_fetch" else ("ok", None)

        async with speakers(mosquitto.port, [full, other], policy) as nodes:
            waiting = await receipt(broadcast_id, start, full.device_id)
            now = datetime.now(UTC)
            await clips.want(full.device_id, variant["sha256"], variant["bytes"], now)
            await sender.tick(now)
            row = await row_in(full.device_id, "failed")
            assert row.reason == budget
            await waiting.refresh_from_db()
            assert (waiting.state, waiting.reason) == (ReceiptState.FAILED, budget)
            await sender.tick(now + timedelta(days=1))  # final: never sent again, even when asked again
            await clips.want(full.device_id, variant["sha256"], variant["bytes"], now)
            await sender.tick(now + timedelta(days=1))
            assert len(nodes.commands(full.device_id, "speaker.clip_fetch")) == 1
            # until the speaker's next birth (an operator may have freed its flash): asked once more
            full.ses, full.seq = 2, 0
            await nodes.birth(full)

            async def asked_again() -> bool:
                await sender.tick(datetime.now(UTC))
                return len(nodes.commands(full.device_id, "speaker.clip_fetch")) == 2

            await async_wait_for(asked_again, what="the clip asked again after the birth")
            assert (await row_in(full.device_id, "failed")).reason == budget

            # an https public URL: an ESP32 is not sent it (it fetches http:// only), the row says why
            sender.base_url = "https://fleet.example"
            await clips.want(other.device_id, variant["sha256"], variant["bytes"], now)
            await sender.tick(now)
            row = await row_in(other.device_id, "failed")
            assert row.reason == clips.HTTPS_REFUSED
            assert nodes.commands(other.device_id, "speaker.clip_fetch") == []
            # a fleet with a plain-HTTP public URL puts such rows back at its first tick
            sender.base_url, sender._https_cleared = sender.settings.public_base_url(), False
            await sender.tick(now)
            await row_in(other.device_id, "failed")  # answered over budget by this node too
            assert len(nodes.commands(other.device_id, "speaker.clip_fetch")) == 1
