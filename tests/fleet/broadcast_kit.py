"""Rows and device messages for the receipts and clocks tests: a broadcast with receipts, a speaker
whose messages go through the contract's checks (parse_upstream) and the real ingest (apply_batch)."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from contract import Upstream, parse_upstream
from fleet.broadcast.models import Broadcast, BroadcastReceipt, Clip, Level, ReceiptState, SpeakerDelivery
from fleet.ingest.store import BatchResult, apply_batch

CLIP_NAME = "c" + "ab" * 12


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def entry_id(broadcast_id: int, at: datetime) -> str:
    return f"b{broadcast_id}.{int(at.timestamp())}"


async def broadcast() -> Broadcast:
    clip = await Clip.create(title="notice", source="tts", source_sha256=uuid.uuid4().hex * 2, source_format="wav",
                             source_bytes=1000, duration_ms=5000, created_by="test")
    return await Broadcast.create(title="Thông báo", clip=clip, level=Level.NORMAL, targets={"devices": []},
                                  start_local="2026-12-01T06:30:00", timezone="Asia/Ho_Chi_Minh",
                                  created_by="test", updated_by="test")


async def receipt(b: Broadcast, device_id: str, at: datetime, state: ReceiptState = ReceiptState.PENDING,
                  **fields: Any) -> BroadcastReceipt:
    return await BroadcastReceipt.create(broadcast=b, device_id=device_id, entry_id=entry_id(b.id, at),
                                         occurrence_at=at, version=1, state=state, **fields)


async def delivery(device_id: str, entries: list[str], version: int) -> SpeakerDelivery:
    """What A1's delivery records when it sends a document (made here by hand)."""
    doc = {"volume": 70, "schedule": [{"id": e, "clip": CLIP_NAME, "at": int(e.split(".")[1]) * 1000}
                                      for e in entries]}
    row, _ = await SpeakerDelivery.update_or_create(  # a speaker's birth may have made its row (due)
        device_id=device_id, defaults={"doc": doc, "sent_version": version, "sent_at": datetime.now(UTC)})
    return row


class Speaker:
    """A speaker's messages, numbered, stamped on its own clock (`offset_ms` ahead of the fleet's)."""

    def __init__(self, device_id: str | None = None, kind: str = "esp32", offset_ms: int = 0) -> None:
        self.device_id = device_id or f"spk-{uuid.uuid4().hex[:10]}"
        self.kind = kind
        self.offset_ms = offset_ms
        self.ses = 1
        self.seq = 0

    def ts(self, at: datetime) -> int:
        return ms(at) + self.offset_ms

    def message(self, suffix: str, body: dict[str, Any]) -> Upstream:
        return parse_upstream(f"ioc/v1/d/{self.device_id}/{suffix}", json.dumps({"v": 1, **body}).encode())

    def birth(self, at: datetime, roles: tuple[str, ...] = ("speaker",)) -> Upstream:
        return self.message("birth", {"ses": self.ses, "ts": self.ts(at), "kind": self.kind, "fw": "1.0.0",
                                      "roles": list(roles), "boot": {"n": 1, "reason": "power"}, "period_s": 60})

    def numbered(self, suffix: str, at: datetime | None, **fields: Any) -> Upstream:
        self.seq += 1
        return self.message(suffix, {"ses": self.ses, "seq": self.seq,
                                     "ts": None if at is None else self.ts(at), **fields})

    def health(self, at: datetime) -> Upstream:
        return self.numbered("health", at, up_s=10, fw="1.0.0")

    def reported(self, at: datetime, version: int, status: str = "applied", error: str | None = None) -> Upstream:
        extra = {"error": error} if error is not None else {}
        return self.numbered("state/reported", at, version=version, status=status, **extra)

    def playback(self, at: datetime | None, event_id: str, phase: str, status: str,
                 reason: str | None = None) -> Upstream:
        data: dict[str, Any] = {"broadcast": event_id.split("@")[0], "clip": CLIP_NAME, "status": status}
        if reason is not None:
            data["reason"] = reason
        return self.numbered("event", at, id=event_id, type="playback", phase=phase, category="other", data=data)

    def result(self, at: datetime, command_id: str, status: str = "ok", detail: Any = None) -> Upstream:
        extra = {"detail": detail} if detail is not None else {}
        return self.numbered("cmd/result", at, id=command_id, status=status, **extra)


async def ingest(messages: list[Upstream], now: datetime) -> BatchResult:
    result = await apply_batch(messages, now)
    assert result.refused == []
    return result


def later(at: datetime, **delta: float) -> datetime:
    return at + timedelta(**delta)
