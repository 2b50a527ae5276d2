"""Making upstream messages: stamp, encode, check against the contract, queue.

Everything a device sends except its birth and death goes through here and through the
store-and-forward queue, so it is numbered once and survives outages.
"""

import json
import math
from collections.abc import Mapping
from typing import Any

from contract import ContractError, child_topic, device_topic, parse_upstream
from edge.errors import EmitError
from edge.queue import Outbox
from edge.stamps import CLOCK_VALID_AFTER_MS, Stamper

QOS = 1


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


class Uplink:
    def __init__(self, device_id: str, stamper: Stamper, outbox: Outbox) -> None:
        self.device_id = device_id
        self.stamper = stamper
        self.outbox = outbox

    def emit(self, suffix: str, fields: Mapping[str, Any]) -> None:
        """Stamp `fields` with the next (ses, seq), check it as the fleet will, and queue it.

        EmitError if the message would break the contract: the fleet would reject it anyway,
        and a stamped message that never arrives would look like a loss.
        """
        self._emit(device_topic(self.device_id, suffix), suffix, fields)

    def child(self, child_id: str, suffix: str, fields: Mapping[str, Any]) -> None:
        """A message for a child device this Pi speaks for: `child/{child_id}/{birth,death,health}`,
        numbered in the Pi's own stream like everything else (docs/protocol.md)."""
        try:
            topic = child_topic(self.device_id, child_id, suffix)
        except ContractError as err:
            raise EmitError(f"child/{child_id[:32]}/{suffix[:16]}: {err}") from err
        self._emit(topic, f"child/{child_id}/{suffix}", fields)

    def _emit(self, topic: str, suffix: str, fields: Mapping[str, Any]) -> None:
        envelope = self.stamper.next_envelope()
        if envelope.keys() & fields.keys():
            raise EmitError(f"{suffix}: the envelope fields {sorted(envelope)} are the agent's to set")
        try:
            payload = encode({**envelope, **fields})
            parse_upstream(topic, payload)
        except (ContractError, ValueError, TypeError) as err:
            raise EmitError(f"{suffix}: {err}") from err
        self.stamper.advance()  # the stamp is taken only by a message that is queued
        self.outbox.append(topic, payload, QOS)

    def telemetry(self, role: str, readings: Mapping[str, float], at_ms: int | None = None) -> None:
        """Queue the finite readings; one that is not (NaN, an infinity) is left out, as the contract
        allows finite numbers only, and nothing is sent when none is left.

        `at_ms`: the time the readings stand for when it is not now (a sample sent later, a
        window's start). Left out while the clock is not set: the fleet files the message by its
        arrival then, as it does with `ts: null` (docs/protocol.md, telemetry)."""
        finite = {name: value for name, value in readings.items()
                  if not isinstance(value, float) or math.isfinite(value)}
        if not finite:
            return
        fields: dict[str, Any] = {"role": role, "r": finite}
        if at_ms is not None and at_ms >= CLOCK_VALID_AFTER_MS:
            fields["at_ms"] = at_ms
        self.emit("telemetry", fields)

    def event(
        self,
        *,
        event_id: str,
        event_type: str,
        phase: str,
        category: str,
        data: Mapping[str, Any],
        snapshot: Mapping[str, Any] | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "id": event_id,
            "type": event_type,
            "phase": phase,
            "category": category,
            "data": dict(data),
        }
        if snapshot is not None:
            fields["snapshot"] = dict(snapshot)
        self.emit("event", fields)

    def command_result(self, command_id: str, status: str, detail: Mapping[str, Any] | str | None) -> None:
        fields: dict[str, Any] = {"id": command_id, "status": status}
        if detail is not None:
            fields["detail"] = detail if isinstance(detail, str) else dict(detail)
        self.emit("cmd/result", fields)

    def state_reported(self, version: int, status: str, error: str | None = None) -> None:
        fields: dict[str, Any] = {"version": version, "status": status}
        if error is not None:
            fields["error"] = error[:200]
        self.emit("state/reported", fields)
