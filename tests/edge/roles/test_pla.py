"""The mixed PLA compressor (edge/filters/pla.py): every sample within E after linear
interpolation between the points sent, on random series (hypothesis) and on the real ones."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.filters import MixedPla, SwingingDoor, max_error
from edge.filters.swinging_door import Point
from tests.edge.roles.conftest import seattle_temps
from tests.edge.roles.test_filters import ped_counts


def compress(series: list[Point], e: float, interval: int | None = None) -> tuple[list[Point], list[int]]:
    """The points, and for each sample the time of the last point sent once it was taken."""
    pla = MixedPla(e, interval)
    points: list[Point] = []
    sent_by: list[int] = []
    for t, v in series:
        points += pla.add(t, v)
        sent_by.append(points[-1][0] if points else t)
    return points + pla.flush(), sent_by


def within(series: list[Point], points: list[Point], e: float) -> bool:
    scale = max([1.0, *(abs(v) for _, v in series)])
    return max_error(series, points) <= e + 1e-9 * scale


series_strategy = st.lists(
    st.tuples(st.integers(1, 5_000), st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)),
    min_size=1, max_size=300,
).map(lambda steps: [(sum(dt for dt, _ in steps[: i + 1]), v) for i, (_, v) in enumerate(steps)])

walk_strategy = st.lists(st.floats(-3, 3, allow_nan=False), min_size=2, max_size=400).map(
    lambda steps: [(i * 1000, sum(steps[: i + 1])) for i in range(len(steps))]
)


@settings(max_examples=300, deadline=None)
@given(series=series_strategy, e=st.sampled_from([0.0, 0.01, 0.5, 3.0, 250.0]))
def test_every_sample_of_a_random_series_is_within_the_error(series: list[Point], e: float) -> None:
    points, _ = compress(series, e)
    assert within(series, points, e)
    times = [t for t, _ in points]
    assert times == sorted(set(times)), "points in time order, one per time"
    assert times[0] == series[0][0] and times[-1] == series[-1][0]


@settings(max_examples=200, deadline=None)
@given(series=walk_strategy, e=st.floats(0.05, 5), interval=st.sampled_from([None, 3_000, 20_000]))
def test_a_random_walk_within_the_error_and_never_further_behind_than_the_interval(
        series: list[Point], e: float, interval: int | None) -> None:
    points, sent_by = compress(series, e, interval)
    assert within(series, points, e)
    if interval is not None:
        assert all(t - sent <= interval for (t, _), sent in zip(series, sent_by, strict=True))


def test_fewer_points_than_the_swinging_door_on_real_series_within_the_error() -> None:
    for samples, errors in ((seattle_temps(), (0.5, 1.0, 2.0)), (ped_counts(), (20.0, 50.0, 100.0))):
        for e in errors:
            points, _ = compress(samples, e)
            assert within(samples, points, e)
            door = SwingingDoor(e)
            sdt = [p for t, v in samples for p in door.add(t, v)] + door.flush()
            # benchmarks/sensor_compression.py measured 1.18-1.32x on these rows
            assert len(sdt) / len(points) > 1.15, (e, len(points), len(sdt))


def test_a_line_is_two_points_and_a_steady_value_one_per_interval() -> None:
    line = [(t * 1000, 3.0 + 0.5 * t) for t in range(100)]
    points, _ = compress(line, 0.01)
    assert len(points) == 2 and within(line, points, 0.01)
    steady = [(t * 1000, 7.0) for t in range(100)]
    points, _ = compress(steady, 0.5, 10_000)
    assert [t for t, _ in points] == [*range(0, 100_000, 10_000), 99_000]
    assert all(math.isclose(v, 7.0, abs_tol=0.5) for _, v in points)
    assert MixedPla(1).add(5, 1.0) == [] and MixedPla(1, 0).add(5, 1.0) == [(5, 1.0)]


def test_the_contract_vector_is_what_the_compressor_sends() -> None:
    """contract/vectors/rules/series.json: the Pi's side of the compressed-series example."""
    from contract.examples import rule_cases

    case = next(c for c in rule_cases("series") if "samples" in c)
    points, _ = compress([(t, v) for t, v in case["samples"]], case["max_error"])
    assert points == [(m["payload"]["at_ms"], m["payload"]["r"][case["reading"]]) for m in case["messages"]]
