"""The presence rule for births and deaths (docs/protocol.md, "Presence"), as pure logic.

Both certificates are retained, so after a fleet restart they can arrive in either order; a
broker can also deliver the will of a connection that the device has already replaced. The rule
below gives the same answer for every arrival order.
"""


def death_applies(death_session: int, current_session: int | None) -> bool:
    """A death counts unless it is older than the session on record (a late will)."""
    return current_session is None or death_session >= current_session


def birth_applies(birth_session: int, ended_session: int | None) -> bool:
    """A birth counts unless its session has already ended (a retained birth seen after its death)."""
    return birth_session != ended_session
