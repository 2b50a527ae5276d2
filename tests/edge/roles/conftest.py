"""Fixtures for the roles' tests: linked pseudo-terminals (a real serial link), real series."""

import csv
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import vega_datasets

from tests.support.wait import wait_for

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class PtyPair:
    device: str  # the end a role opens, as it would open /dev/ttyUSB0
    sensor: str  # the end the test's sensor stand-in writes to


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[PtyPair]:
    """Two pseudo-terminals linked by socat: bytes written to one are read on the other."""
    device, sensor = tmp_path / "ttyDEVICE", tmp_path / "ttySENSOR"
    proc = subprocess.Popen(
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={device}", f"pty,raw,echo=0,link={sensor}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: device.exists() and sensor.exists(), what="socat's ptys", timeout=10)
        yield PtyPair(str(device), str(sensor))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def seattle_temps() -> list[tuple[int, float]]:
    """vega-datasets' hourly Seattle temperatures (2010, °F), as (t_ms, value)."""
    path = Path(vega_datasets.__file__).parent / "_data" / "seattle-temps.csv"
    with path.open() as f:
        return [(i * HOUR_MS, float(row["temp"])) for i, row in enumerate(csv.DictReader(f))]
