"""The pure parts of rollouts: windows, phases and their stable order, the health comparison, the
per-device state rule (fleet/ota/windows.py, gate.py, states.py)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.ota.gate import (
    FailureRate,
    boot_count,
    check_phases,
    compare,
    failure_breach,
    phase_of,
    phase_sizes,
    rank_key,
    rise,
)
from fleet.ota.states import DeviceState, accepts, reason_of, reported_state
from fleet.ota.windows import WindowError, applicable, open_now, parse_window, parse_windows

UTC_ZONE = ZoneInfo("UTC")


def at(hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return datetime(2026, 11, 30, int(hours), int(minutes), tzinfo=UTC)


@pytest.mark.parametrize(("window", "open_at", "closed_at"), [
    ("08:00-17:00", ["08:00", "12:30", "16:59"], ["07:59", "17:00", "23:00"]),
    ("22:00-05:00", ["22:00", "23:59", "00:00", "04:59"], ["05:00", "12:00", "21:59"]),
    ("not 07:00-09:00,16:30-19:00", ["06:59", "09:00", "12:00", "19:00"], ["07:00", "08:30", "16:30", "18:59"]),
    ("00:00-24:00", ["00:00", "12:00", "23:59"], []),
    ("always", ["00:00", "13:13"], []),
    ("06:00-07:00, 20:00-22:00", ["06:30", "21:00"], ["07:00", "19:59", "22:00"]),
])
def test_a_window_is_open_at_its_hours(window: str, open_at: list[str], closed_at: list[str]) -> None:
    windows = {"light": parse_window(window)}
    assert all(open_now(windows, "light", at(t), UTC_ZONE) for t in open_at)
    assert not any(open_now(windows, "light", at(t), UTC_ZONE) for t in closed_at)


@pytest.mark.parametrize("bad", ["", "8-17", "08:00-25:00", "24:00-05:00", "08:00-08:00", "08:60-09:00",
                                 "not", "08:00-09:00;10:00-11:00", "x" * 200, ",".join(["01:00-02:00"] * 9)])
def test_a_bad_window_says_why(bad: str) -> None:
    with pytest.raises(WindowError):
        parse_window(bad)


def test_windows_follow_the_time_zone_and_every_applicable_class() -> None:
    windows = parse_windows({"light": "08:00-17:00", "esp32": "not 12:00-13:00", "*": "00:00-01:00"})
    assert applicable(windows, "esp32", ["light"]) == "esp32,light"
    assert applicable(windows, "pi", ["camera"]) == "*"
    assert applicable({}, "pi", ["camera"]) == ""
    hcm = ZoneInfo("Asia/Ho_Chi_Minh")  # UTC+7: 02:00 UTC is 09:00 there
    assert open_now(windows, "esp32,light", at("02:00"), hcm)
    assert not open_now(windows, "esp32,light", at("05:30"), hcm)  # 12:30 local: the esp32 window is shut
    assert not open_now(windows, "esp32,light", at("02:00"), UTC_ZONE)
    assert open_now(windows, "", at("02:00"), hcm)
    with pytest.raises(WindowError, match="device class"):
        parse_windows({"Light": "08:00-17:00"})


@given(total=st.integers(1, 5000), cut=st.lists(st.floats(0.01, 99.99), min_size=0, max_size=5, unique=True))
def test_each_phase_holds_the_one_before(total: int, cut: list[float]) -> None:
    phases = [*sorted(cut), 100.0]
    assert check_phases(phases) is None
    sizes = phase_sizes(total, phases)
    assert sizes == sorted(sizes) and sizes[-1] == total and sizes[0] >= 1
    ranks = [phase_of(rank, sizes) for rank in range(total)]
    assert ranks == sorted(ranks)  # a device's phase never comes before a lower-ranked device's
    assert all(sum(1 for p in ranks if p <= k) == sizes[k] for k in range(len(sizes)))


def test_the_order_is_stable_and_differs_by_release() -> None:
    ids = [f"light-{i:04d}" for i in range(200)]
    one = sorted(ids, key=lambda d: rank_key("esp32-0.2.0", d))
    assert one == sorted(reversed(ids), key=lambda d: rank_key("esp32-0.2.0", d))
    assert one[:10] != sorted(ids, key=lambda d: rank_key("esp32-0.3.0", d))[:10]


@pytest.mark.parametrize(("phases", "words"), [([], "1 to"), ([10, 50], "last phase"), ([50, 50, 100], "cumulative"),
                                               ([0, 100], "above 0"), ([100, 101], "at most 100")])
def test_bad_phases_say_why(phases: list[float], words: str) -> None:
    assert words in (check_phases(phases) or "")


def _series(start: datetime, values: list[dict[str, object]]) -> list[tuple[datetime, object]]:
    return [(start + timedelta(seconds=i), v) for i, v in enumerate(values)]


def test_health_after_against_before() -> None:
    t0 = datetime(2026, 11, 30, tzinfo=UTC)
    before = _series(t0, [{"loop_ms": 20, "heap_free": 40_000, "dropped": 3, "roles": {"camera": {"fps": 10.0}}}] * 5)
    same = _series(t0, [{"loop_ms": 22, "heap_free": 39_500, "dropped": 3, "roles": {"camera": {"fps": 9.5}}}] * 5)
    assert compare(before, same, 25)[0] == []
    slow = _series(t0, [{"loop_ms": 40, "heap_free": 20_000, "roles": {"camera": {"fps": 4.0}}}] * 5)
    breaches, figures_before, figures_after = compare(before, slow, 25)
    assert [b.figure for b in breaches] == ["loop_ms", "heap_free", "camera_fps"]
    assert figures_before["loop_ms"] == 20 and figures_after["loop_ms"] == 40
    # a counter since boot is compared by how much it rose; a restart counts from 0
    dropping = _series(t0, [{"dropped": n} for n in (0, 5, 10, 2, 9)])
    steady = _series(t0, [{"dropped": n} for n in (3, 3, 3, 4, 4)])
    assert rise([0, 5, 10, 2, 9]) == 19
    assert [b.figure for b in compare(steady, dropping, 25)[0]] == ["dropped"]
    # a tiny value: a change below the figure's floor is noise
    assert compare(_series(t0, [{"loop_ms": 1}] * 3), _series(t0, [{"loop_ms": 1.5}] * 3), 25)[0] == []
    # whole milliseconds: a board whose slowest turn was 0 ms and is now 1 ms is rounding (a unix-port
    # board on its new slot, tests/system/test_ota_e2e.py); 0 -> 2 ms counts
    assert compare(_series(t0, [{"loop_ms": 0}] * 3), _series(t0, [{"loop_ms": 1}] * 3), 25)[0] == []
    assert compare(_series(t0, [{"loop_ms": 0}] * 3), _series(t0, [{"loop_ms": 2}] * 3), 25)[0] != []
    # no figure on one side: nothing to judge
    assert compare(before, _series(t0, [{"up_s": 3}]), 25) == ([], {}, {})


def test_failure_rate_and_boots() -> None:
    assert not failure_breach(FailureRate(1, 20), 5) and failure_breach(FailureRate(2, 20), 5)
    assert not failure_breach(FailureRate(0, 0), 0)
    assert boot_count({"boot": {"n": 7}}) == 7
    assert boot_count({"boot": {"n": True}}) is None and boot_count(None) is None


def test_a_report_moves_a_device_forward_only() -> None:
    assert reported_state("downloading") is DeviceState.DOWNLOADING
    assert reported_state("pending") is None and reported_state("applying") is None
    assert accepts(DeviceState.OFFERED, None, DeviceState.FAILED)
    assert accepts(DeviceState.DOWNLOADING, None, DeviceState.DOWNLOADING)  # a new pct
    assert not accepts(DeviceState.INSTALLING, None, DeviceState.RECEIVED)
    assert not accepts(DeviceState.CONFIRMED, None, DeviceState.FAILED)
    assert accepts(DeviceState.CONFIRMED, None, DeviceState.ROLLED_BACK)
    assert accepts(DeviceState.FAILED, "timeout: no report for 60 s", DeviceState.CONFIRMED)
    assert not accepts(DeviceState.FAILED, "hash_mismatch: tampered", DeviceState.CONFIRMED)
    assert reason_of({"reason": "hash_mismatch", "msg": "x" * 500}) == "hash_mismatch: " + "x" * 185
    assert reason_of("plain") == "plain" and reason_of(None) is None and reason_of({"reason": 3}) == "3"
