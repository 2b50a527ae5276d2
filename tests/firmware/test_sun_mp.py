"""Sunrise and sunset computed on the device agree with astral (CPython) within a minute, all year."""

import datetime
import json
from pathlib import Path

import astral
import astral.sun
import pytest

from tests.firmware.support import SLOT, run_mp

YEAR = 2026
PLACES = {  # name: (lat, lon, UTC offset in minutes)
    "dong-xoai": (11.535, 106.883, 420),
    "hanoi": (21.028, 105.854, 420),
    "quito": (-0.18, -78.47, -300),
    "sydney": (-33.87, 151.21, 600),
    "oslo": (59.91, 10.75, 60),
    "reykjavik": (64.15, -21.94, 0),
}
TOLERANCE_S = 60


def astral_event(place: tuple[float, float, int], date: datetime.date, rising: bool) -> float | None:
    """astral's event on a local date, as Unix seconds, or None if it finds none."""
    lat, lon, tz_min = place
    tz = datetime.timezone(datetime.timedelta(minutes=tz_min))
    fn = astral.sun.sunrise if rising else astral.sun.sunset
    try:
        return fn(astral.Observer(lat, lon), date, tz).timestamp()
    except ValueError:
        return None


def year_errors(name: str) -> list[float]:
    """For every event astral finds in the year, the distance to the device's nearest one.

    Compared as instants, not per date: near the polar circle a sunset can fall just after local
    midnight, where astral files it under the next date and the device under the evening's date.
    """
    place = PLACES[name]
    tz_min = place[2]
    first = datetime.date(YEAR, 1, 1)
    day0 = (first - datetime.date(1970, 1, 1)).days
    days = (datetime.date(YEAR + 1, 1, 1) - first).days
    result = run_mp("mp_sun_year.py", str(SLOT), str(day0 - 1), str(days + 2),
                    *(str(x) for x in place))
    assert result.returncode == 0, result.stderr
    ours: dict[bool, list[int]] = {True: [], False: []}
    for line in result.stdout.split("\n")[:-1]:
        day, rise, sset = line.split()
        for rising, value in ((True, rise), (False, sset)):
            if value != "-":
                ours[rising].append(int(day) * 86400 + int(value) - tz_min * 60)
    errors = []
    for i in range(days):
        date = first + datetime.timedelta(i)
        for rising in (True, False):
            ref = astral_event(place, date, rising)
            if ref is not None:
                errors.append(min(abs(t - ref) for t in ours[rising]))
    return errors


@pytest.mark.parametrize("name", sorted(PLACES))
def test_a_whole_year_agrees_with_astral(name: str, artifacts_dir: Path) -> None:
    errors = year_errors(name)
    worst = max(errors)
    print(f"\n{name}: {len(errors)} events, largest error {worst:.1f} s")
    report = artifacts_dir / "firmware-sun-errors.json"
    known = json.loads(report.read_text()) if report.exists() else {}
    known[name] = round(worst, 1)
    report.write_text(json.dumps(known, indent=1, sort_keys=True))
    assert worst <= TOLERANCE_S
