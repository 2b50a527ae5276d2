"""What a notification says (docs/ops.md, "Notifications"): the webhook's JSON and the e-mail, for
one alert change or a digest of many grouped by ward. Pure: no database, no network."""

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from fleet.ops.models import SEVERITY_RANK, Severity

NO_WARD = "(no ward)"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class EventView:
    """One alert change as a message tells it: the event, with its alert and rule as they are now."""

    event_id: int
    action: str  # raised | reraised | resolved | ...
    at: datetime
    alert_id: int
    rule: str
    kind: str
    device_id: str
    device_kind: str | None
    ward: str
    severity: str
    state: str  # the alert's state when the message is made
    summary: str
    value: Any = None

    def as_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "action": self.action, "at": _iso(self.at),
                "alert": {"id": self.alert_id, "rule": self.rule, "kind": self.kind, "device_id": self.device_id,
                          "device_kind": self.device_kind, "ward": self.ward, "severity": self.severity,
                          "state": self.state, "summary": self.summary, "value": self.value}}


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _line(text: str, limit: int = 200) -> str:
    """One header-safe line (a device id or summary must not start a new header)."""
    flat = _CONTROL.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def by_ward(events: list[EventView]) -> dict[str, list[EventView]]:
    """Events grouped by ward (sorted by name; no ward last), each group most severe first."""
    groups: dict[str, list[EventView]] = {}
    for event in events:
        groups.setdefault(event.ward or NO_WARD, []).append(event)
    ordered = sorted(groups, key=lambda w: (w == NO_WARD, w))
    return {w: sorted(groups[w], key=lambda e: (_rank(e.severity), e.device_id, e.event_id)) for w in ordered}


def _rank(severity: str) -> int:
    try:
        return SEVERITY_RANK[Severity(severity)]
    except ValueError:
        return len(SEVERITY_RANK)


def payload(events: list[EventView], *, digest: bool, sent_at: datetime) -> dict[str, Any]:
    """The webhook's body: Standard Webhooks' `type` / `timestamp` / `data`."""
    kind = "alert.digest" if digest or len(events) != 1 else f"alert.{events[0].action}"
    groups = by_ward(events)
    return {"type": kind, "timestamp": _iso(sent_at),
            "data": {"digest": digest, "count": len(events),
                     "wards": [{"ward": w, "count": len(g)} for w, g in groups.items()],
                     "events": [e.as_json() for group in groups.values() for e in group]}}


def probe_payload(channel: str, sent_at: datetime) -> dict[str, Any]:
    return {"type": "channel.test", "timestamp": _iso(sent_at),
            "data": {"channel": channel, "message": "a test message from the IOC fleet"}}


def _severities(events: list[EventView]) -> str:
    counts = Counter(e.severity for e in events)
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=_rank))


def subject(events: list[EventView], *, digest: bool) -> str:
    if not digest and len(events) == 1:
        e = events[0]
        return _line(f"[IOC {e.severity.upper()}] {e.action}: {e.rule} on {e.device_id} "
                     f"({e.ward or NO_WARD}), {e.state}")
    wards = by_ward(events)
    return _line(f"[IOC digest] {len(events)} alert changes in {len(wards)} ward(s): {_severities(events)}")


def text(events: list[EventView], *, digest: bool) -> str:
    if not digest and len(events) == 1:
        e = events[0]
        return "\n".join([
            f"Alert {e.action}: {_line(e.summary, 300)}", "",
            f"Device:   {e.device_id}" + (f" ({e.device_kind})" if e.device_kind else ""),
            f"Ward:     {e.ward or NO_WARD}",
            f"Rule:     {e.rule} ({e.kind})",
            f"Severity: {e.severity}",
            f"State:    {e.state}",
            f"At:       {_iso(e.at)}",
            f"Alert id: {e.alert_id}", ""])
    lines = [f"{len(events)} alert changes ({_severities(events)}), grouped by ward.", ""]
    for ward, group in by_ward(events).items():
        lines.append(f"{ward} ({len(group)})")
        lines.extend(f"  {e.severity:<8} {e.action:<9} {e.device_id}  rule {e.rule} ({e.kind})  state {e.state}  "
                     f"{_iso(e.at)}  alert {e.alert_id}: {_line(e.summary, 120)}" for e in group)
        lines.append("")
    return "\n".join(lines)


def email(events: list[EventView], *, digest: bool, sender: str, to: list[str], at: datetime) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject(events, digest=digest)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(at)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(text(events, digest=digest))
    return message


def probe_email(channel: str, *, sender: str, to: list[str], at: datetime) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = _line(f"[IOC test] channel {channel}")
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(at)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(f"A test message from the IOC fleet for the notification channel {channel!r}.\n")
    return message
