"""The presence rule for births and deaths (docs/protocol.md, "Presence"), as pure logic.

A device never reuses a session number: every connection takes a new one, so a session that a
death has ended stays ended. Births and deaths are retained, so a fleet that (re)subscribes gets
the last of each again, in no particular order; and with several fleet instances, a birth and
the death of the same connection can be applied in either order. The rule below gives the same
answer for every such order.
"""

from dataclasses import dataclass


@dataclass
class Presence:
    """What the fleet knows of a device's connection."""

    session: int | None = None  # the newest session on record (from a birth or a death that counted)
    ended: int | None = None  # the session of the last death that counted
    online: bool = False

    def birth(self, ses: int, *, retained: bool) -> bool:
        """Apply a birth; False when it does not count."""
        if ses == self.ended:
            return False  # that connection's death is already in: a birth seen after its death
        if retained and self.session is not None and ses < self.session:
            return False  # a broker replaying an older connection's retained birth
        # a live birth below the session on record: the device's counter went back (logged by the caller)
        self.session, self.online = ses, True
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
