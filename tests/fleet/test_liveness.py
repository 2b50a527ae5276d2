"""The verdict on a device's connection (fleet/liveness.py): the state table of docs/fleet.md,
"Liveness", row by row, its edges, and properties over generated records. Pure: no broker, no
database."""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.liveness import (
    DEFAULT_PERIOD_S,
    MAX_PERIOD_S,
    Hearing,
    Reason,
    State,
    Timing,
    Verdict,
    expected_period,
    judge,
    period_from_desired,
    period_from_result,
    revives,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TIMING = Timing(stale_after_periods=2, silent_after_periods=3)
LISTENING = Hearing(timedelta(hours=1))  # the fleet has heard the broker for an hour
DEAF = Hearing(None)


@dataclass(frozen=True)
class Record:
    status: str = "active"
    online: bool = True
    session: int | None = 7
    last_seen_at: datetime | None = NOW - timedelta(seconds=10)
    last_death_at: datetime | None = None
    last_death_reason: str | None = None
    silenced_at: datetime | None = None
    health_period_s: int = 30


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def verdict(record: Record, hearing: Hearing = LISTENING) -> tuple[State, Reason | None]:
    result = judge(record, NOW, hearing, TIMING)
    return result.state, result.reason


# one case per row of the table, in its order; the first row that holds wins
ROWS = [
    ("decommissioned, whatever else", Record(status="decommissioned", online=True), DEAF,
     (State.DECOMMISSIONED, None)),
    ("registered, never heard", Record(status="registered", online=False, session=None, last_seen_at=None),
     LISTENING, (State.NEVER_SEEN, None)),
    ("never heard, even while the fleet is deaf", Record(online=False, session=None, last_seen_at=None), DEAF,
     (State.NEVER_SEEN, None)),
    ("the fleet does not hear the broker: online on record", Record(), DEAF,
     (State.UNKNOWN, Reason.FLEET_DISCONNECTED)),
    ("the fleet does not hear the broker: offline on record",
     Record(online=False, last_death_at=ago(60), last_death_reason="lost"), DEAF,
     (State.UNKNOWN, Reason.FLEET_DISCONNECTED)),
    ("its will", Record(online=False, last_death_at=ago(60), last_death_reason="lost"), LISTENING,
     (State.OFFLINE, Reason.LOST)),
    ("said goodbye", Record(online=False, last_death_at=ago(60), last_death_reason="shutdown"), LISTENING,
     (State.OFFLINE, Reason.SHUTDOWN)),
    ("the sweep judged it silent", Record(online=False, silenced_at=ago(5), last_seen_at=ago(200)), LISTENING,
     (State.OFFLINE, Reason.SILENT)),
    ("silent after an older death", Record(online=False, silenced_at=ago(5), last_death_at=ago(3600),
                                           last_death_reason="lost"), LISTENING, (State.OFFLINE, Reason.SILENT)),
    ("a death after an older silent verdict", Record(online=False, silenced_at=ago(3600), last_death_at=ago(5),
                                                     last_death_reason="shutdown"), LISTENING,
     (State.OFFLINE, Reason.SHUTDOWN)),
    ("online on record, quiet beyond 3 periods: silent before the sweep writes it", Record(last_seen_at=ago(91)),
     LISTENING, (State.OFFLINE, Reason.SILENT)),
    ("quiet beyond 2 periods", Record(last_seen_at=ago(61)), LISTENING, (State.STALE, Reason.OVERDUE)),
    ("heard within 2 periods", Record(last_seen_at=ago(59)), LISTENING, (State.ONLINE, None)),
]


@pytest.mark.parametrize(("record", "hearing", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_state_table(record: Record, hearing: Hearing, expected: tuple[State, Reason | None]) -> None:
    assert verdict(record, hearing) == expected


def test_the_edges_are_strictly_beyond_the_periods() -> None:
    assert verdict(Record(last_seen_at=ago(60))) == (State.ONLINE, None)
    assert verdict(Record(last_seen_at=ago(60.001))) == (State.STALE, Reason.OVERDUE)
    assert verdict(Record(last_seen_at=ago(90))) == (State.STALE, Reason.OVERDUE)
    assert verdict(Record(last_seen_at=ago(90.001))) == (State.OFFLINE, Reason.SILENT)


def test_only_time_the_fleet_hears_the_broker_counts() -> None:
    """Back from an outage: a device quiet for an hour gets its 3 periods from when the fleet
    hears again, not from its last message (it could not be heard meanwhile)."""
    quiet_for_an_hour = Record(last_seen_at=ago(3600))
    assert verdict(quiet_for_an_hour, Hearing(timedelta(seconds=10))) == (State.ONLINE, None)
    assert verdict(quiet_for_an_hour, Hearing(timedelta(seconds=61))) == (State.STALE, Reason.OVERDUE)
    assert verdict(quiet_for_an_hour, Hearing(timedelta(seconds=91))) == (State.OFFLINE, Reason.SILENT)
    result = judge(quiet_for_an_hour, NOW, Hearing(timedelta(seconds=10)), TIMING)
    assert result.quiet_since == ago(10)


def test_the_period_scales_the_verdict() -> None:
    esp32 = Record(health_period_s=60, last_seen_at=ago(150))
    assert verdict(esp32) == (State.STALE, Reason.OVERDUE)
    assert verdict(replace(esp32, health_period_s=1, last_seen_at=ago(3.5))) == (State.OFFLINE, Reason.SILENT)


def test_an_offline_device_with_no_reason_on_record_has_none() -> None:
    assert verdict(Record(online=False)) == (State.OFFLINE, None)
    assert verdict(Record(online=False, last_death_at=ago(5), last_death_reason="???")) == (State.OFFLINE, None)


def test_a_device_heard_but_never_born_is_judged_by_its_messages() -> None:
    """Its birth was lost (a fleet crash before it was stored): its messages made it online."""
    assert verdict(Record(session=None, last_seen_at=ago(5))) == (State.ONLINE, None)


def test_timing_refuses_a_stale_threshold_at_or_beyond_the_silent_one() -> None:
    for stale, silent in ((3, 3), (4, 3), (0, 3)):
        with pytest.raises(ValueError, match="stale_after_periods"):
            Timing(stale_after_periods=stale, silent_after_periods=silent)


def test_revives() -> None:
    assert revives(True, 5, 1)  # already online
    assert revives(False, None, 3)  # offline by the fleet's verdict, or never born: no death ended anything
    assert revives(False, 5, 6)  # a newer connection than the one that died (its birth was missed)
    assert not revives(False, 5, 5)  # the stream of the connection that died: a late delivery
    assert not revives(False, 5, 4)  # an older stream, replayed: only a birth brings it back


def test_expected_period() -> None:
    assert expected_period(30) == 30
    assert expected_period(1) == 1
    assert expected_period(0) == DEFAULT_PERIOD_S  # declares no period
    assert expected_period(None) == DEFAULT_PERIOD_S
    assert expected_period(True) == DEFAULT_PERIOD_S
    assert expected_period(-3) == DEFAULT_PERIOD_S
    assert expected_period(2**52) == MAX_PERIOD_S


def test_period_from_a_command_result_or_a_desired_document() -> None:
    assert period_from_result("ok", {"period_s": 600}) == 600
    assert period_from_result("error", {"period_s": 600}) is None
    assert period_from_result("ok", "done") is None
    assert period_from_result("ok", {"period_s": 0}) is None
    assert period_from_result("ok", {"period_s": "600"}) is None
    assert period_from_desired({"health_period_s": 120, "speaker": {}}) == 120
    assert period_from_desired({"speaker": {}}) is None
    assert period_from_desired(None) is None
    assert period_from_desired({"health_period_s": False}) is None


records = st.builds(
    Record,
    status=st.sampled_from(["registered", "discovered", "active", "decommissioned"]),
    online=st.booleans(),
    session=st.none() | st.integers(0, 2**40),
    last_seen_at=st.none() | st.floats(0, 10_000).map(ago),
    last_death_at=st.none() | st.floats(0, 10_000).map(ago),
    last_death_reason=st.none() | st.sampled_from(["lost", "shutdown"]),
    silenced_at=st.none() | st.floats(0, 10_000).map(ago),
    health_period_s=st.integers(1, MAX_PERIOD_S),
)
hearings = st.none() | st.floats(0, 20_000).map(lambda s: timedelta(seconds=s))


@given(records, hearings)
def test_every_record_gets_one_consistent_verdict(record: Record, listening_for: timedelta | None) -> None:
    result = judge(record, NOW, Hearing(listening_for), TIMING)
    assert isinstance(result, Verdict)
    reasons = {State.ONLINE: {None}, State.STALE: {Reason.OVERDUE},
               State.OFFLINE: {Reason.LOST, Reason.SHUTDOWN, Reason.SILENT, None},
               State.UNKNOWN: {Reason.FLEET_DISCONNECTED}, State.NEVER_SEEN: {None}, State.DECOMMISSIONED: {None}}
    assert result.reason in reasons[result.state]
    if listening_for is None and result.state not in (State.NEVER_SEEN, State.DECOMMISSIONED):
        assert result.state is State.UNKNOWN


@given(records, st.floats(0, 20_000), st.floats(0, 20_000))
def test_quiet_only_ever_moves_a_connected_device_towards_offline(record: Record, first: float,
                                                                 more: float) -> None:
    """With nothing heard, later is never better: online, then stale, then offline (silent)."""
    order = [State.ONLINE, State.STALE, State.OFFLINE]
    hearing = Hearing(timedelta(hours=10))
    record = replace(record, status="active", online=True, last_seen_at=record.last_seen_at or ago(0))
    earlier = judge(record, NOW + timedelta(seconds=first), hearing, TIMING).state
    later = judge(record, NOW + timedelta(seconds=first + more), hearing, TIMING).state
    assert order.index(later) >= order.index(earlier)
