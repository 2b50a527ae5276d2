"""The broadcasts calendar's pure rules: RRULE expansion on the city's wall clock (across months,
in a DST-free and a DST time zone), exception dates, until/count, quiet hours, and conflicts with
their resolution (fleet/broadcast/schedule.py, conflicts.py)."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from fleet.broadcast.conflicts import Plan, Speaker, find, quiet_skips
from fleet.broadcast.models import Level
from fleet.broadcast.schedule import Occurrence, QuietHours, ScheduleError, Timing, check_rrule, instant
from fleet.settings import Settings

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
BERLIN = ZoneInfo("Europe/Berlin")
YEAR = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC))


def locals_of(timing: Timing, limit: int = 1000) -> list[datetime]:
    return [o.local for o in timing.occurrences(*YEAR, limit)]


def test_monthly_rules_across_months_in_ho_chi_minh() -> None:
    # the 31st: only months that have one; the last Friday: every month
    on_31 = Timing(datetime(2026, 1, 31, 7, 0), HCM, check_rrule("FREQ=MONTHLY;BYMONTHDAY=31"), count=7)
    assert [d.date() for d in locals_of(on_31)] == [
        date(2026, 1, 31), date(2026, 3, 31), date(2026, 5, 31), date(2026, 7, 31), date(2026, 8, 31),
        date(2026, 10, 31), date(2026, 12, 31)]
    last_friday = Timing(datetime(2026, 11, 1, 17, 30), HCM, check_rrule("freq=monthly;byday=-1FR"),
                         until=date(2027, 2, 28))
    found = last_friday.occurrences(*YEAR, 100)
    assert [o.local for o in found] == [datetime(2026, 11, 27, 17, 30), datetime(2026, 12, 25, 17, 30),
                                        datetime(2027, 1, 29, 17, 30), datetime(2027, 2, 26, 17, 30)]
    # no DST in Vietnam: always 7 hours ahead of UTC
    assert all(o.start == o.local.replace(tzinfo=UTC) - timedelta(hours=7) for o in found)


def test_weekly_rule_keeps_its_wall_clock_time_across_both_dst_changes_in_berlin() -> None:
    weekly = Timing(datetime(2026, 3, 1, 6, 30), BERLIN, check_rrule("FREQ=WEEKLY;BYDAY=SU"),
                    until=date(2026, 11, 1))
    found = weekly.occurrences(*YEAR, 100)
    assert {o.local.time() for o in found} == {datetime(2026, 1, 1, 6, 30).time()}
    utc_hours = {o.local.date(): o.start.hour for o in found}
    assert utc_hours[date(2026, 3, 22)] == 5  # CET, UTC+1
    assert utc_hours[date(2026, 3, 29)] == 4  # CEST from 29 March
    assert utc_hours[date(2026, 10, 18)] == 4
    assert utc_hours[date(2026, 10, 25)] == 5  # CET again from 25 October
    assert len(found) == 36


def test_times_that_do_not_exist_or_exist_twice() -> None:
    # 02:30 on 29 March 2026 does not exist in Berlin: it plays at 03:30 CEST (01:30 UTC)
    gap = Timing(datetime(2026, 3, 28, 2, 30), BERLIN, check_rrule("FREQ=DAILY"), count=3)
    starts = [o.start for o in gap.occurrences(*YEAR, 10)]
    assert starts == [datetime(2026, 3, 28, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
                      datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]
    assert starts[1].astimezone(BERLIN).strftime("%H:%M %Z") == "03:30 CEST"
    # 02:30 on 25 October 2026 exists twice: the first (CEST, 00:30 UTC)
    fold = Timing(datetime(2026, 10, 25, 2, 30), BERLIN)
    assert [o.start for o in fold.occurrences(*YEAR, 10)] == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]
    assert instant(datetime(2026, 10, 25, 2, 30), BERLIN) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_exception_dates_count_and_until() -> None:
    holidays = frozenset({date(2026, 4, 30), date(2026, 5, 1)})  # Reunification Day, Labour Day
    daily = Timing(datetime(2026, 4, 28, 6, 0), HCM, check_rrule("FREQ=DAILY"), count=6, exceptions=holidays)
    # COUNT counts generated occurrences; the exception dates are then taken out (RFC 5545's EXDATE)
    assert [d.day for d in locals_of(daily)] == [28, 29, 2, 3]
    weekdays = Timing(datetime(2026, 4, 27, 6, 0), HCM, check_rrule("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"),
                      until=date(2026, 5, 8), exceptions=holidays)
    assert [d.day for d in locals_of(weekdays)] == [27, 28, 29, 4, 5, 6, 7, 8]
    once = Timing(datetime(2026, 5, 1, 9, 0), HCM, exceptions=holidays)
    assert locals_of(once) == []
    # a window and a limit
    assert len(Timing(datetime(2026, 1, 1), HCM, "FREQ=DAILY").occurrences(*YEAR, 5)) == 5
    window = Timing(datetime(2026, 1, 1, 12, 0), HCM, "FREQ=DAILY").occurrences(
        datetime(2026, 2, 1, 5, 0, tzinfo=UTC), datetime(2026, 2, 3, 5, 0, tzinfo=UTC), 100)
    assert [o.start for o in window] == [datetime(2026, 2, 1, 5, 0, tzinfo=UTC), datetime(2026, 2, 2, 5, 0, tzinfo=UTC)]


@pytest.mark.parametrize(("rule", "why"), [
    ("FREQ=DAILY;COUNT=3", "use the 'count' field"),
    ("FREQ=DAILY;UNTIL=20270101T000000Z", "use the 'until' field"),
    ("FREQ=MINUTELY", "refused"),
    ("FREQ=SECONDLY;INTERVAL=30", "refused"),
    ("BYDAY=MO", "FREQ is missing"),
    ("FREQ=WEEKLY;BYDAY=XX", "not a valid recurrence rule"),
    ("FREQ=DAILY\nX", "RRULE value"),
    ("FREQ=DAILY;" + "BYHOUR=1;" * 80, "RRULE value"),
])
def test_rules_that_are_refused(rule: str, why: str) -> None:
    with pytest.raises(ScheduleError, match=why):
        check_rrule(rule)


def test_timing_refusals() -> None:
    with pytest.raises(ScheduleError, match="recurring"):
        Timing(datetime(2026, 1, 1), HCM, count=3)
    with pytest.raises(ScheduleError, match="before the start"):
        Timing(datetime(2026, 1, 1), HCM, "FREQ=DAILY", until=date(2025, 12, 31))
    with pytest.raises(ScheduleError, match="count"):
        Timing(datetime(2026, 1, 1), HCM, "FREQ=DAILY", count=0)


def test_quiet_hours_across_midnight() -> None:
    night = QuietHours.parse("22:00", "06:00")
    assert [night.holds(datetime(2026, 1, 1, h, m)) for h, m in ((21, 59), (22, 0), (3, 0), (5, 59), (6, 0))] == \
        [False, True, True, True, False]
    noon = QuietHours.parse("12:00", "13:30")
    assert [noon.holds(datetime(2026, 1, 1, h, m)) for h, m in ((11, 59), (12, 0), (13, 29), (13, 30))] == \
        [False, True, True, False]
    with pytest.raises(ScheduleError, match="HH:MM"):
        QuietHours.parse("24:00", "06:00")


def _at(hour: int, minute: int = 0, day: int = 1) -> Occurrence:
    local = datetime(2026, 12, day, hour, minute)
    return Occurrence(instant(local, HCM), local)


SPEAKERS = {s.id: s for s in (Speaker("a1", "tan-phu"), Speaker("a2", "tan-phu"), Speaker("b1", "tan-binh"))}


def _plan(id_: int | None, level: Level, occurrences: list[Occurrence], speakers: set[str], order: int = 100,
          minutes: int = 2) -> Plan:
    return Plan(id_, f"b{id_}", level, order, timedelta(minutes=minutes), frozenset(speakers), occurrences)


def test_conflicts_are_resolved_by_level_then_order_then_age() -> None:
    news = _plan(1, Level.NORMAL, [_at(6, 30), _at(6, 30, day=2)], {"a1", "a2"})
    alert = _plan(2, Level.PRIORITY, [_at(6, 31)], {"a2", "b1"})  # overlaps 06:30-06:32 on a2 only
    later = _plan(3, Level.NORMAL, [_at(6, 33)], {"a1"})  # after news ended: no conflict
    new = _plan(None, Level.NORMAL, [_at(6, 30), _at(6, 31, day=2)], {"a1", "a2", "b1"}, order=100)
    found = find(new, [news, alert, later], SPEAKERS, {})
    assert [(c.other_id, c.start.astimezone(HCM).strftime("%d %H:%M"), c.speakers, c.winner, c.reason)
            for c in found] == [
        (1, "01 06:30", ("a1", "a2"), "other", "older"),  # same level and order: the older one wins
        (2, "01 06:30", ("a2", "b1"), "other", "level"),
        (1, "02 06:31", ("a1", "a2"), "other", "older")]
    first = _plan(None, Level.NORMAL, [_at(6, 29)], {"a1"}, order=10)
    assert [(c.winner, c.reason) for c in find(first, [news], SPEAKERS, {})] == [("this", "order")]
    siren = _plan(None, Level.EMERGENCY, [_at(6, 31)], {"a2"}, order=999)
    assert [(c.other_id, c.winner, c.reason) for c in find(siren, [news, alert], SPEAKERS, {})] == [
        (1, "this", "level"), (2, "this", "level")]
    # an edited broadcast is not in conflict with its own earlier version
    assert find(_plan(1, Level.NORMAL, [_at(6, 30)], {"a1"}), [news], SPEAKERS, {}) == []
    # touching is not overlapping: [06:30, 06:32) and [06:32, ...)
    assert find(_plan(None, Level.NORMAL, [_at(6, 32)], {"a1"}), [news], SPEAKERS, {}) == []


def test_quiet_hours_keep_normal_broadcasts_off_a_ward() -> None:
    quiet = {"tan-phu": QuietHours.parse("22:00", "06:00")}
    night_news = _plan(None, Level.NORMAL, [_at(22, 30), _at(7, 0, day=2)], {"a1", "a2", "b1"})
    assert quiet_skips(night_news, SPEAKERS, quiet) == {_at(22, 30).start: ["a1", "a2"]}
    night_alert = _plan(None, Level.PRIORITY, [_at(22, 30)], {"a1"})
    assert quiet_skips(night_alert, SPEAKERS, quiet) == {}
    other = _plan(7, Level.NORMAL, [_at(22, 31)], {"a1", "b1"})
    # on a1 neither plays (quiet); on b1 (another ward) both do
    assert [c.speakers for c in find(night_news, [other], SPEAKERS, quiet)] == [("b1",)]
    assert [c.speakers for c in find(night_alert, [other], SPEAKERS, quiet)] == []  # the other does not play on a1


def test_the_city_time_zone_is_checked_at_start() -> None:
    assert Settings().timezone == "Asia/Ho_Chi_Minh"
    assert Settings(timezone="Europe/Berlin").timezone == "Europe/Berlin"
    for bad in ("Mars/Olympus_Mons", "../etc/passwd", ""):
        with pytest.raises(ValidationError, match="FLEET_TIMEZONE: no time zone named"):
            Settings(timezone=bad)
