"""A real webhook receiver for relay tests (an http.server in a thread) that verifies every
signature with the `standardwebhooks` package, and a relay fleet: the real service with an
endpoint and a route, enrolled devices publishing events through Mosquitto."""

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from standardwebhooks import Webhook, WebhookVerificationError

from fleet.ops.webhook_sign import new_secret
from fleet.relay.models import EndpointKind, RelayEndpoint, RelayRoute
from fleet.runtime import Runtime
from tests.support.device import ScriptedDevice
from tests.support.mosquitto import free_port

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived
    verified_with: list[str]  # the secrets (of `Receiver.secrets`) that verify it

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    secrets: list[str] = field(default_factory=list)  # each call is checked against every one
    calls: list[Call] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)  # given in order; then 204
    delay_s: float = 0.0  # a slow receiver: wait this long before answering
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"", times: int = 1) -> None:
        with self.lock:
            self.answers.extend([(status, headers or {}, body)] * times)

    def verified(self) -> list[Call]:
        """Calls that at least one secret verifies (all of them, in a correct relay)."""
        return [c for c in self.calls if c.verified_with]


@contextmanager
def webhook_receiver(*secrets: str) -> Iterator[Receiver]:
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}/ioc/events", list(secrets))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            good = []
            for secret in receiver.secrets:
                try:
                    Webhook(secret).verify(body, headers)
                    good.append(secret)
                except WebhookVerificationError:
                    pass
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            with receiver.lock:
                receiver.calls.append(Call(headers, body, time.monotonic(), good))
                status, extra, text = receiver.answers.pop(0) if receiver.answers else (204, {}, b"")
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="relay-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def runtime_of(http: httpx.AsyncClient) -> Runtime:
    runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def endpoint_for(http: httpx.AsyncClient, receiver: Receiver, *, route: dict[str, Any] | None = None,
                       **settings: Any) -> RelayEndpoint:
    """A webhook endpoint to `receiver` (its secret added to the receiver's) with one route
    (`route`: the filter; none given: every event), the route table reloaded."""
    secret = new_secret()
    receiver.secrets.append(secret)
    endpoint = await RelayEndpoint.create(name=f"ioc-{uuid.uuid4().hex[:6]}", kind=EndpointKind.WEBHOOK,
                                          url=receiver.url, secret=secret, **settings)
    await RelayRoute.create(name=f"r-{uuid.uuid4().hex[:6]}", endpoint=endpoint, **(route or {}))
    relay = runtime_of(http).relay
    assert relay is not None
    await relay.routes_changed()
    return endpoint


def event(device: ScriptedDevice, type_: str = "motion", phase: str = "start", category: str = "security",
          data: dict[str, Any] | None = None, snapshot: dict[str, Any] | None = None) -> int:
    """Publish one event; returns its seq."""
    fields: dict[str, Any] = {"id": f"{type_}-{device.seq}", "type": type_, "phase": phase, "category": category,
                              "data": data or {}}
    if snapshot is not None:
        fields["snapshot"] = snapshot
    return device.send("event", **fields)


def now() -> datetime:
    return datetime.now(UTC)


def ordered_by(calls: list[Call], key: Callable[[Call], Any]) -> bool:
    values = [key(c) for c in calls]
    return values == sorted(values)
