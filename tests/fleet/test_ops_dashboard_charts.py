"""fleet/web/charts.py on its own: runs split at gaps, every point drawn, local times on the axis."""

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from fleet.ops.history import Point
from fleet.web import charts

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
START = datetime(2026, 11, 29, 17, 0, tzinfo=UTC)  # 00:00 on 30/11 in Ho Chi Minh City


def _points(minutes: list[int]) -> list[Point]:
    return [Point(START + timedelta(minutes=m), 10.0 + m % 3, 14.0 + m % 5, 12.0 + m % 4, 3) for m in minutes]


def test_a_stretch_with_no_point_breaks_the_band_and_the_line() -> None:
    minutes = [*range(0, 30), *range(75, 120), 200]  # 45 minutes missing, then one lone point
    chart = charts.render(_points(minutes), START, START + timedelta(hours=4), HCM, title="temp_c", unit="°C",
                          bucket=timedelta(minutes=1))
    assert (chart.segments, chart.drawn) == (3, len(minutes))
    lines = re.findall(r'<polyline class="mean" points="([^"]+)"', chart.svg)
    assert [len(line.split()) for line in lines] == [30, 45]
    assert len(re.findall(r'<circle class="mean"', chart.svg)) == 1  # the lone point is a dot, not nothing
    assert len(re.findall(r'<polygon class="band"', chart.svg)) == 2
    assert 'data-points="76"' in chart.svg and "<script" not in chart.svg and "style=" not in chart.svg


def test_the_usual_spacing_is_not_a_gap_even_when_buckets_are_finer() -> None:
    every_five = list(range(0, 240, 5))  # reports every 5 minutes, 1-minute buckets
    chart = charts.render(_points(every_five), START, START + timedelta(hours=4), HCM, title="pm25",
                          bucket=timedelta(minutes=1))
    assert chart.segments == 1


def test_the_time_axis_is_in_the_fleets_time_zone_with_the_date_at_midnight() -> None:
    day = charts.render(_points([0, 60]), START - timedelta(hours=6), START + timedelta(hours=6), HCM, title="x")
    labels = re.findall(r'<text class="tick" x="[\d.]+" y="\d+" text-anchor="middle">([^<]+)<', day.svg)
    assert "30/11" in labels and "03:00" in labels and "21:00" in labels  # local, not UTC (17:00, 20:00)
    week = charts.render(_points([0]), START - timedelta(days=7), START, HCM, title="x")
    week_labels = re.findall(r'text-anchor="middle">([^<]+)<', week.svg)
    assert week_labels[0] == "23/11" and week_labels[-1] == "30/11"


def test_an_empty_range_says_so_and_the_value_axis_has_round_ticks() -> None:
    empty = charts.render([], START, START + timedelta(hours=1), HCM, title="heap_free")
    assert empty.drawn == 0 and "no data in this range" in empty.svg
    flat = charts.render(_points([0, 1, 2]), START, START + timedelta(minutes=10), HCM, title="t", unit=" B")
    values = re.findall(r'text-anchor="end">([^<]+)<', flat.svg)
    assert values == ["10 B", "12 B", "14 B", "16 B"]  # lowest min 10, highest max 16: steps of 2
