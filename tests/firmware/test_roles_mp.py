"""Role logic under MicroPython: SDS011 frames, filters on a real series, light programs."""

import importlib.util
import itertools
from pathlib import Path

import pytest

from tests.firmware.support import SLOT, run_mp


@pytest.mark.parametrize("case", ["sds011_frames", "alarm_hysteresis", "light_program", "sensor_reconfigured"])
def test_case(case: str) -> None:
    result = run_mp("mp_roles.py", str(SLOT), case)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"ok {case}"


def seattle_temps() -> list[float]:
    """A real year of hourly temperatures (vega-datasets' seattle-temps, in Fahrenheit)."""
    spec = importlib.util.find_spec("vega_datasets")
    assert spec is not None and spec.submodule_search_locations, "vega-datasets is not installed"
    path = Path(spec.submodule_search_locations[0]) / "_data" / "seattle-temps.csv"
    return [float(line.split(",")[1]) for line in path.read_text().splitlines()[1:]]


def test_deadband_and_heartbeat_on_a_real_series(tmp_path: Path) -> None:
    temps = seattle_temps()
    series = tmp_path / "series.txt"
    series.write_text("\n".join(str(t) for t in temps))
    band, max_hours = 2.0, 6
    result = run_mp("mp_roles.py", str(SLOT), "filters_series", str(series), str(band),
                    str(max_hours * 3600000))
    assert result.returncode == 0, result.stderr
    sent = [(int(n), float(v)) for n, v in (line.split() for line in result.stdout.split("\n")[:-1])]
    # Report by exception: far fewer messages than samples ...
    assert 0 < len(sent) < len(temps) / 2
    # ... never silent longer than the heartbeat, and between reports the (median-filtered)
    # value stayed within the deadband of the last one sent.
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent)]
    assert max(gaps) <= max_hours
    for (n, v), (m, _) in itertools.pairwise(sent):
        between = [sorted(temps[max(0, k - 2):k + 1])[len(temps[max(0, k - 2):k + 1]) // 2]
                   for k in range(n + 1, m)]
        assert all(abs(x - v) < band for x in between)
    print(f"\n{len(temps)} hourly samples, {len(sent)} reported")
