"""One relayed event as a message (docs/relay.md, "Events, as relayed"): its id, its severity,
its JSON body and the Standard Webhooks headers of one attempt. Pure: no database, no network."""

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fleet.ops import webhook_sign

SEVERITIES = ("critical", "major", "minor", "warning", "info")  # most severe first
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}  # 0 is the most severe
BY_TYPE = {"safe_mode": "critical", "lamp_failure": "major", "alarm": "major", "disk_full": "major",
           "day_burning": "minor"}
MESSAGE_TYPE = "device.event"


def message_id(device: str, epoch: int, ses: int, seq: int) -> str:
    """`msg_` + 26 lower-case base32 characters of SHA-256("<device>\\0<epoch>\\0<ses>\\0<seq>"):
    the same for every endpoint, every retry and every re-enqueue of one event."""
    digest = hashlib.sha256(f"{device}\0{epoch}\0{ses}\0{seq}".encode()).digest()
    return "msg_" + base64.b32encode(digest).decode().lower()[:26]


def severity(type_: str, phase: str, data: Any) -> str:
    """The event's own `data.severity` when it is a known one, else by type (docs/relay.md)."""
    own = data.get("severity") if isinstance(data, Mapping) else None
    if isinstance(own, str) and own in SEVERITY_RANK:
        return own
    if type_ == "playback":
        failed = isinstance(data, Mapping) and data.get("result") == "failed"
        return "warning" if failed or phase == "once" else "info"
    return BY_TYPE.get(type_, "info")


def iso_ms(moment: datetime) -> str:
    """`2026-11-30T16:40:01.900Z`: UTC, milliseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def payload(*, device: Mapping[str, Any], event: Mapping[str, Any], stream: tuple[int, int, int],
            snapshot: Any, made_at: datetime) -> dict[str, Any]:
    """The message as stored in the outbox: the body without `snapshot.url` and `available`
    (made afresh at each attempt by `body`). `device` holds id, kind, name, ward, site, tags, lat,
    lon; `event` id, type, phase, category, at, received_at (datetimes) and data."""
    epoch, ses, seq = stream
    snap = None
    if isinstance(snapshot, Mapping) and isinstance(snapshot.get("sha256"), str):
        snap = {"sha256": snapshot["sha256"], "bytes": snapshot.get("bytes"),
                "type": snapshot.get("type", "image/jpeg")}
    return {"type": MESSAGE_TYPE, "timestamp": iso_ms(made_at),
            "data": {"device": dict(device),
                     "event": {"id": event["id"], "type": event["type"], "phase": event["phase"],
                               "category": event["category"],
                               "severity": severity(event["type"], event["phase"], event["data"]),
                               "at": iso_ms(event["at"]), "received_at": iso_ms(event["received_at"]),
                               "data": event["data"]},
                     "stream": {"epoch": epoch, "ses": ses, "seq": seq},
                     "snapshot": snap}}


def body(stored: Mapping[str, Any], *, available: bool, url: str | None) -> bytes:
    """The JSON bytes of one attempt: the stored payload with the snapshot's `available`/`url`."""
    data = dict(stored["data"])
    if isinstance(data.get("snapshot"), Mapping):
        data["snapshot"] = {**data["snapshot"], "available": available, "url": url}
    return json.dumps({**stored, "data": data}, separators=(",", ":"), ensure_ascii=False).encode()


def signed_headers(message_id_: str, timestamp: int, body_: bytes, *, secret: str,
                   previous_secret: str | None = None, previous_until: datetime | None = None,
                   now: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers; while the previous secret is valid (`now` before
    `previous_until`) the signature header holds both, space-separated: `v1,<new> v1,<old>`."""
    headers = webhook_sign.headers(secret, message_id_, timestamp, body_)
    if previous_secret and previous_until is not None and now < previous_until:
        old = webhook_sign.signature(previous_secret, message_id_, timestamp, body_)
        headers["webhook-signature"] += " " + old
    return headers
