"""What sending one relayed message looks like to the delivery worker, whatever carries it (a
webhook POST, an MQTT publish): docs/relay.md, "Endpoints and delivery"."""

from dataclasses import dataclass
from typing import Protocol

from fleet.relay.models import RelayEndpoint


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result. `ok`: delivered. `status`: the HTTP status or the MQTT reason code
    (None: no answer, e.g. a timeout or a refused connection). `retry_after_s`: the receiver's
    `Retry-After`, if it gave one. `error`: one line for the delivery's `last_error` (no secret)."""

    ok: bool
    status: int | None = None
    retry_after_s: float | None = None
    error: str | None = None

    @property
    def gone(self) -> bool:
        return self.status == 410


@dataclass(frozen=True, slots=True)
class Message:
    """One message ready to send: the body (JSON bytes) and its Standard Webhooks headers
    (`webhook-id`, `webhook-timestamp`, `webhook-signature`), plus what an MQTT topic template needs."""

    body: bytes
    headers: dict[str, str]
    device: str
    type: str
    phase: str
    category: str
    ward: str


class Transport(Protocol):
    async def send(self, endpoint: RelayEndpoint, message: Message) -> Outcome: ...

    async def forget(self, endpoint_id: int) -> None:
        """Drop what is held for an endpoint no longer enabled (an MQTT connection)."""
        ...

    async def close(self) -> None: ...
