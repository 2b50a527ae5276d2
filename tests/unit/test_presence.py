"""fleet/ingest/presence.py: the presence rule's promises (docs/protocol.md, "Presence"), checked
over generated histories. The rule vectors (contract/vectors/rules/presence.json, run by
tests/test_contract.py and the firmware tests) pin single cases; these check that the answer does
not depend on the order a broker replays retained messages in, nor on late redeliveries."""

from dataclasses import astuple
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from fleet.ingest.presence import Presence

SESSIONS = st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=8, unique=True).map(sorted)


def birth_body(ses: int) -> dict[str, Any]:
    """A connection's birth: its device time grows with the session (one device, one clock)."""
    return {"ses": ses, "ts": 1_795_766_400_000 + ses, "boot": {"n": 1, "reason": "start"}}


def state(presence: Presence) -> tuple[Any, ...]:
    return astuple(presence)


def apply(presence: Presence, message: tuple[str, int], *, retained: bool) -> None:
    kind, ses = message
    if kind == "birth":
        presence.birth(ses, retained=retained, body=birth_body(ses))
    else:
        presence.death(ses)


@st.composite
def retained_replays(draw: st.DrawFn) -> tuple[list[tuple[str, int]], int, bool]:
    """Births and deaths of a device's connections, as retained messages come back to a fleet that
    (re)subscribes, several instances or several resubscriptions over time: any of them, in any
    order, some more than once. Returns them with the newest session and whether it ended."""
    sessions = draw(SESSIONS)
    messages = [(kind, ses) for ses in sessions for kind in ("birth", "death")]
    chosen = draw(st.lists(st.sampled_from(messages), min_size=1, max_size=20))
    newest = max(ses for _, ses in chosen)
    return chosen, newest, ("death", newest) in chosen


@given(retained_replays())
def test_retained_births_and_deaths_in_any_order_end_on_the_newest_connection(
        case: tuple[list[tuple[str, int]], int, bool]) -> None:
    messages, newest, ended = case
    presence = Presence()
    for message in messages:
        apply(presence, message, retained=True)
    assert presence.session == newest
    assert presence.online is not ended
    assert presence.epoch == 0  # a replay never looks like a counter that went back


@st.composite
def live_history(draw: st.DrawFn) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """A device's connections in order (a birth, and a death for some), and the same with late
    redeliveries of earlier messages mixed in (QoS 1 is at least once)."""
    in_order: list[tuple[str, int]] = []
    for ses in draw(SESSIONS):
        in_order.append(("birth", ses))
        if draw(st.booleans()):
            in_order.append(("death", ses))
    delivered = list(in_order)
    for _ in range(draw(st.integers(min_value=0, max_value=10))):
        at = draw(st.integers(min_value=1, max_value=len(delivered)))
        earlier = draw(st.sampled_from(delivered[:at]))
        delivered.insert(at, earlier)
    return in_order, delivered


@given(live_history())
def test_late_redeliveries_of_live_messages_change_nothing(
        case: tuple[list[tuple[str, int]], list[tuple[str, int]]]) -> None:
    in_order, delivered = case
    expected, presence = Presence(), Presence()
    for message in in_order:
        apply(expected, message, retained=False)
    for message in delivered:
        apply(presence, message, retained=False)
    assert state(presence) == state(expected)
    assert presence.epoch == 0


@given(live_history(), st.integers(min_value=0, max_value=3))
def test_each_message_applied_twice_in_a_row_changes_nothing_the_second_time(
        case: tuple[list[tuple[str, int]], list[tuple[str, int]]], retained_mask: int) -> None:
    in_order, _ = case
    presence = Presence()
    for index, message in enumerate(in_order):
        retained = bool(retained_mask >> (index % 2) & 1)
        apply(presence, message, retained=retained)
        once = state(presence)
        apply(presence, message, retained=retained)
        assert state(presence) == once


@given(SESSIONS, st.integers(min_value=1, max_value=3))
def test_a_counter_that_went_back_starts_one_epoch_per_restart(sessions: list[int], restarts: int) -> None:
    assume(sessions[-1] >= 2**restarts)
    presence = Presence()
    for ses in sessions:
        presence.birth(ses, retained=False, body=birth_body(ses))
    later = birth_body(sessions[-1])["ts"] + 60_000  # the wiped device's births come later by its clock
    for n in range(1, restarts + 1):
        ses = sessions[-1] >> n  # each restart lands below the session on record
        assert presence.birth(ses, retained=False, body={"ses": ses, "ts": later + n, "boot": {"n": 1}})
        assert (presence.online, presence.session, presence.ended, presence.epoch) == (True, ses, None, n)
    # an older connection's birth delivered late after all that: its clock says so, ignored
    assert not presence.birth(sessions[0], retained=False, body=birth_body(sessions[0])) or \
        sessions[0] > (sessions[-1] >> restarts)
