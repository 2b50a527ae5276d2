"""The presence rule for births and deaths (docs/protocol.md, "Presence"), as pure logic.

A device never reuses a session number: every connection takes a new one, so a session that a
death has ended stays ended. Births and deaths are retained, so a fleet that (re)subscribes gets
the last of each again, in no particular order; and with several fleet instances, a birth and
the death of the same connection can be applied in either order. The rule below gives the same
answer for every such order.

A device whose counter went back (its storage was lost, or it predates the rule that a lost counter
restarts at a random 48-bit value) starts a new **epoch**: its streams are keyed (device, epoch, ses),
so they never collide with the streams it numbered before (docs/protocol.md, "Streams").
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class Presence:
    """What the fleet knows of a device's connection."""

    session: int | None = None  # the newest session on record (from a birth or a death that counted)
    ended: int | None = None  # the session of the last death that counted
    online: bool = False
    epoch: int = 0  # bumped each time the device's counter went back
    record: Mapping[str, Any] | None = None  # the last birth that counted, as sent

    def birth(self, ses: int, *, retained: bool, body: Mapping[str, Any] | None = None) -> bool:
        """Apply a birth (`body`: as sent); False when it does not count."""
        record = self.record
        if body is not None and record is not None and record.get("ses") == ses:
            if body == record:
                return False  # the birth on record again: a redelivery or a retained replay
            if _earlier(body, record):
                return False  # an older connection's birth with that number, delivered late
            return self._new_epoch(ses, body)  # another connection took the number: the counter went back
        if ses == self.ended:
            return False  # that connection's death is already in: a birth seen after its death
        if self.session is not None and ses < self.session:
            if retained:
                return False  # a broker replaying an older connection's retained birth
            if _earlier(body, record):
                return False  # an older connection's birth delivered late (its clock says so)
            return self._new_epoch(ses, body)  # a live birth below the session on record: went back
        self.session, self.online = ses, True
        self.record = body if body is not None else self.record
        return True

    def _new_epoch(self, ses: int, body: Mapping[str, Any] | None) -> bool:
        self.epoch += 1
        self.session, self.ended, self.online = ses, None, True
        self.record = body
        return True

    def death(self, ses: int) -> bool:
        """Apply a death; False when it does not count."""
        if self.session is not None and ses < self.session:
            return False  # the late will of a connection the device has already replaced
        # ses == session: the current connection ended; ses > session: a newer connection ended
        # before its birth reached the fleet, and a device has one connection at a time
        self.session = self.ended = ses
        self.online = False
        return True


def _earlier(body: Mapping[str, Any] | None, record: Mapping[str, Any] | None) -> bool:
    """Both births carry a device time and `body`'s is the earlier one."""
    ts = body.get("ts") if body is not None else None
    on_record = record.get("ts") if record is not None else None
    return isinstance(ts, int) and isinstance(on_record, int) and ts < on_record
