"""History charts as server-side SVG: a min/max band and a mean line over time, with axes.

Pure: no framework, no database. The points come downsampled from the server (fleet/ops/history.py
`series()`: one per non-empty bucket, each with min, max, mean and n); a stretch with no point is a
gap and is drawn as one (the band and the line stop and start again), never bridged. Times on the
axis are in the fleet's time zone (FLEET_TIMEZONE). The SVG needs no script and no style attribute
(the page's Content-Security-Policy allows neither inline): classes are styled by static/ops.css.
"""

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from statistics import median
from typing import Protocol
from zoneinfo import ZoneInfo

WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 12, 28  # room for the y labels and the time axis
GAP_FACTOR = 2.0  # a step longer than this x the usual spacing (or the bucket) is a gap
TIME_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)
MAX_TIME_TICKS = 7


class PointLike(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...
    @property
    def mean(self) -> float: ...
    @property
    def n(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Chart:
    svg: str  # the <svg> element, ready to be put in a page as is
    segments: int  # runs of points with no gap between them
    drawn: int  # points drawn (all of them: on a line, or a dot when alone)


def segments(points: Sequence[PointLike], bucket: timedelta) -> list[list[PointLike]]:
    """The points in runs with no gap: a step longer than GAP_FACTOR x the larger of the bucket
    and the usual (median) step begins a new run. Points sorted by time."""
    if not points:
        return []
    steps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(points)]
    usual = max(bucket.total_seconds(), median(steps) if steps else 0.0)
    runs: list[list[PointLike]] = [[points[0]]]
    for step, point in zip(steps, points[1:], strict=True):
        if step > GAP_FACTOR * usual:
            runs.append([point])
        else:
            runs[-1].append(point)
    return runs


def _nice_step(span: float, ticks: int = 4) -> float:
    raw = span / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _number(value: float, step: float) -> str:
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def _time_ticks(start: datetime, end: datetime, tz: ZoneInfo) -> tuple[list[datetime], str]:
    span = (end - start).total_seconds()
    step = next((s for s in TIME_STEPS if span / s <= MAX_TIME_TICKS), TIME_STEPS[-1] * math.ceil(
        span / TIME_STEPS[-1] / MAX_TIME_TICKS))
    local = start.astimezone(tz)
    if step >= 86400:  # whole local days
        first = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        first = midnight + timedelta(seconds=math.floor((local - midnight).total_seconds() / step) * step)
    ticks = []
    moment = first
    while moment <= end:
        if moment >= start:
            ticks.append(moment)
        # step in local wall time, so the labels stay on the hour across the day
        moment = (moment + timedelta(seconds=step)).astimezone(tz)
    label = "%H:%M" if span <= 86400 else ("%d/%m %H:%M" if step < 86400 else "%d/%m")
    return ticks, label


def _tick_label(local: datetime, label: str) -> str:
    """A time of day, or the date where a short range crosses midnight (so the day is never lost)."""
    if label == "%H:%M" and local.hour == 0 and local.minute == 0:
        return local.strftime("%d/%m")
    return local.strftime(label)


def render(points: Sequence[PointLike], start: datetime, end: datetime, tz: ZoneInfo, *,
           title: str, unit: str = "", bucket: timedelta | None = None) -> Chart:
    """The chart of `points` over [start, end): axes, a band from min to max, the mean as a line."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span_s = max((end - start).total_seconds(), 1.0)
    inside = sorted((p for p in points if start <= p.at <= end), key=lambda p: p.at)
    runs = segments(inside, bucket or timedelta(seconds=span_s / 200))
    low = min((p.min for p in inside), default=0.0)
    high = max((p.max for p in inside), default=1.0)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    step = _nice_step(high - low)
    low, high = math.floor(low / step) * step, math.ceil(high / step) * step

    def x(moment: datetime) -> float:
        return LEFT + (moment - start).total_seconds() / span_s * plot_w

    def y(value: float) -> float:
        return TOP + (high - value) / (high - low) * plot_h

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
             f'role="img" aria-label="{escape(title)}" data-points="{len(inside)}" data-segments="{len(runs)}" '
             'xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>']
    value = low
    while value <= high + step / 2:
        at = y(value)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{at:.1f}" y2="{at:.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{at + 4:.1f}" text-anchor="end">'
                     f"{escape(_number(value, step))}{escape(unit)}</text>")
        value += step
    ticks, label = _time_ticks(start, end, tz)
    for tick in ticks:
        at = x(tick)
        parts.append(f'<line class="grid" x1="{at:.1f}" x2="{at:.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>'
                     f'<text class="tick" x="{at:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                     f"{_tick_label(tick.astimezone(tz), label)}</text>")
    for run in runs:
        if len(run) == 1:
            p = run[0]
            parts.append(f'<line class="band" x1="{x(p.at):.1f}" x2="{x(p.at):.1f}" y1="{y(p.max):.1f}" '
                         f'y2="{y(p.min):.1f}"/><circle class="mean" cx="{x(p.at):.1f}" cy="{y(p.mean):.1f}" r="2.5"/>')
            continue
        upper = " ".join(f"{x(p.at):.1f},{y(p.max):.1f}" for p in run)
        lower = " ".join(f"{x(p.at):.1f},{y(p.min):.1f}" for p in reversed(run))
        parts.append(f'<polygon class="band" points="{upper} {lower}"/>')
        parts.append('<polyline class="mean" points="' + " ".join(f"{x(p.at):.1f},{y(p.mean):.1f}" for p in run)
                     + '"/>')
    if not inside:
        parts.append(f'<text class="nodata" x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle">'
                     "no data in this range</text>")
    parts.append("</svg>")
    return Chart("".join(parts), len(runs), len(inside))


def bars(groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *, title: str,
         unit: str = "") -> str:
    """Grouped bars (the city reports: one group per ward, one bar per series in it), with the same
    axes, classes and number labels as `render`; series are told apart by classes `s0`, `s1`, …"""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM - 18  # room for the legend
    high = max((v for _, values in series for v in values), default=0.0)
    step = _nice_step(high if high > 0 else 1.0)
    high = max(step, math.ceil(high / step) * step)

    def y(value: float) -> float:
        return TOP + (high - value) / high * plot_h

    parts = [f'<svg class="chart bars" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
             f'role="img" aria-label="{escape(title)}" data-groups="{len(groups)}" '
             'xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>",
             f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>']
    value = 0.0
    while value <= high + step / 2:
        at = y(value)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{at:.1f}" y2="{at:.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{at + 4:.1f}" text-anchor="end">'
                     f"{escape(_number(value, step))}{escape(unit)}</text>")
        value += step
    slot = plot_w / max(len(groups), 1)
    width = slot * 0.8 / max(len(series), 1)
    for g, group in enumerate(groups):
        left = LEFT + g * slot + slot * 0.1
        for s, (name, values) in enumerate(series):
            top = y(values[g])
            parts.append(f'<rect class="bar s{s}" x="{left + s * width:.1f}" y="{top:.1f}" width="{width:.1f}" '
                         f'height="{TOP + plot_h - top:.1f}"><title>{escape(group)} · {escape(name)}: '
                         f"{escape(_number(values[g], step))}{escape(unit)}</title></rect>")
        parts.append(f'<text class="tick" x="{LEFT + g * slot + slot / 2:.1f}" y="{TOP + plot_h + 14}" '
                     f'text-anchor="middle">{escape(group[:18])}</text>')
    x = LEFT
    for s, (name, _) in enumerate(series):
        parts.append(f'<rect class="bar s{s}" x="{x}" y="{HEIGHT - 12}" width="10" height="10"/>'
                     f'<text class="tick" x="{x + 14}" y="{HEIGHT - 3}">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    if not groups:
        parts.append(f'<text class="nodata" x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle">'
                     "no data in this range</text>")
    parts.append("</svg>")
    return "".join(parts)
