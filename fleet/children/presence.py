"""A child's presence as the fleet shows it, decided here once for the API, the pages and the
alert rules: what the parent last said, but `unknown` while the parent itself is not heard (an
offline Pi cannot see its children; their last known state is kept, not shown as current)."""

from enum import StrEnum

from fleet.liveness import State


class ChildPresence(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


def child_presence(present: bool | None, parent: State) -> ChildPresence:
    if parent not in (State.ONLINE, State.STALE) or present is None:
        return ChildPresence.UNKNOWN
    return ChildPresence.ONLINE if present else ChildPresence.OFFLINE
