"""Real receivers for notification tests: an SMTP server (aiosmtpd) and an HTTP server that records
webhook calls, each on a free port in its own thread; and alert rows made the way the engine makes
them (an Alert and its `raised` AlertEvent with notify="pending")."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from fleet.ops.models import Alert, AlertEvent, AlertRule, Severity
from tests.support.mosquitto import free_port


@dataclass
class Mailbox:
    host: str
    port: int
    received: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(message)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    box = Mailbox("127.0.0.1", free_port())
    controller = Controller(box, hostname=box.host, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@dataclass
class Hook:
    url: str
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give, in order; then 204


@contextmanager
def webhook_receiver() -> Iterator[Hook]:
    port = free_port()
    hook = Hook(f"http://127.0.0.1:{port}/hooks/ioc")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            hook.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(hook.statuses.pop(0) if hook.statuses else 204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


async def a_rule(name: str, channels: list[str], severity: Severity = Severity.MAJOR,
                 kind: str = "offline") -> AlertRule:
    return await AlertRule.create(name=name, kind=kind, severity=severity, params={"for_s": 300}, channels=channels)


async def raise_alerts(rule: AlertRule, devices: list[str], ward: str, at: datetime,
                       action: str = "raised") -> list[AlertEvent]:
    """One open alert per device and its pending event, as the engine writes them."""
    events = []
    for device_id in devices:
        alert = await Alert.create(rule=rule, kind=rule.kind, device_id=device_id, device_kind="esp32", ward=ward,
                                   severity=rule.severity, live_key=f"{rule.id}:{device_id}",
                                   summary=f"{device_id} offline for 6 min", value={"offline_s": 360},
                                   raised_at=at, last_true_at=at)
        events.append(await AlertEvent.create(alert=alert, at=at, action=action, notify="pending"))
    return events
