"""A rollout's judgement of its devices, pure (docs/ota.md "Rollouts", docs/fleet.md "Rollouts").

No framework, no database: fleet/ota/rollouts.py loads what is stored and asks these functions.

- `phase_of`: which phase a device falls in, from its rank in the rollout's stable order, so
  every phase's set holds the one before it (`rank_key` is that order).
- `failure_breach`: failed + rolled_back over the devices offered, above `max_failure_pct`.
- `compare`: one device's health figures after its update against its own before it.
"""

import hashlib
import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DEFAULT_PHASES = (1, 10, 50, 100)
MAX_PHASES = 10


def rank_key(salt: str, device_id: str) -> str:
    """The stable order of a rollout's devices: SHA-256 of the rollout's salt (its release's name)
    and the device id. The same target gives the same order; another release picks other canaries."""
    return hashlib.sha256(f"{salt}\n{device_id}".encode()).hexdigest()


def phase_sizes(total: int, phases: Sequence[float]) -> list[int]:
    """Cumulative device counts per phase: ceil(total × pct / 100), at least one device, the last
    phase all of them."""
    sizes = [min(total, max(1, math.ceil(total * pct / 100))) for pct in phases]
    if sizes:
        sizes[-1] = total
    return sizes


def phase_of(rank: int, sizes: Sequence[int]) -> int:
    """The first phase whose cumulative count holds the device at `rank` (0-based)."""
    for index, size in enumerate(sizes):
        if rank < size:
            return index
    return len(sizes) - 1


def check_phases(phases: Sequence[float]) -> str | None:
    """Why a phase list is refused, or None: 1 to MAX_PHASES cumulative percentages, each above
    0 and above the one before, the last 100."""
    if not phases or len(phases) > MAX_PHASES:
        return f"phases: 1 to {MAX_PHASES} cumulative percentages, e.g. [1, 10, 50, 100]"
    if any(not 0 < p <= 100 for p in phases):
        return "phases: each percentage is above 0 and at most 100"
    if any(b <= a for a, b in itertools.pairwise(phases)):
        return "phases: cumulative, so each percentage is above the one before"
    if phases[-1] != 100:
        return "phases: the last phase is 100 (every targeted device)"
    return None


@dataclass(frozen=True, slots=True)
class FailureRate:
    failed: int
    offered: int

    @property
    def pct(self) -> float:
        return 100.0 * self.failed / self.offered if self.offered else 0.0


def failure_breach(rate: FailureRate, max_failure_pct: float) -> bool:
    return rate.offered > 0 and rate.pct > max_failure_pct


# -- health figures -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Figure:
    """One health figure: where it is in a health message, whether more is worse, whether it is
    a gauge (compared by median) or a counter since boot (compared by how much it rose), and the
    least change that counts (below it, a rise of tolerance_pct on a tiny value is noise)."""

    name: str
    path: tuple[str, ...]
    higher_is_worse: bool
    counter: bool
    floor: float


FIGURES: tuple[Figure, ...] = (
    # whole milliseconds (an ESP32's slowest turn of a health period): 1 ms either way is rounding
    Figure("loop_ms", ("loop_ms",), higher_is_worse=True, counter=False, floor=2.0),
    Figure("heap_free", ("heap_free",), higher_is_worse=False, counter=False, floor=1024.0),
    Figure("camera_fps", ("roles", "camera", "fps"), higher_is_worse=False, counter=False, floor=0.5),
    Figure("dropped", ("dropped",), higher_is_worse=True, counter=True, floor=1.0),
    Figure("camera_dropped_frames", ("roles", "camera", "dropped_frames"), higher_is_worse=True, counter=True,
           floor=1.0),
    Figure("lamp_failures", ("roles", "light", "failures"), higher_is_worse=True, counter=True, floor=1.0),
)


def value_at(data: Any, path: Sequence[str]) -> float | None:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    if isinstance(data, bool) or not isinstance(data, int | float) or data != data:  # NaN never stored, still
        return None
    return float(data)


def rise(values: Sequence[float]) -> float:
    """How much a counter since boot rose over consecutive samples; a value below the one before
    is a restart, counted from 0."""
    total = 0.0
    for before, after in itertools.pairwise(values):
        total += after - before if after >= before else after
    return total


def summary(figure: Figure, values: Sequence[float]) -> float | None:
    """A window's figure: the median of a gauge, the rise of a counter; None without data."""
    if figure.counter:
        return rise(values) if len(values) >= 2 else None
    return statistics.median(values) if values else None


def worse(figure: Figure, before: float, after: float, tolerance_pct: float) -> bool:
    """`after` is worse than `before` by more than tolerance_pct of `before` and by at least the
    figure's floor."""
    change = after - before if figure.higher_is_worse else before - after
    return change > abs(before) * tolerance_pct / 100 and change >= figure.floor


@dataclass(frozen=True, slots=True)
class Breach:
    figure: str
    before: float
    after: float


def compare(before: Iterable[tuple[datetime, Any]], after: Iterable[tuple[datetime, Any]],
            tolerance_pct: float) -> tuple[list[Breach], dict[str, float], dict[str, float]]:
    """One device's health (time, data) before and after: the breaches, and both windows' figures."""
    ordered_before = [d for _, d in sorted(before, key=lambda x: x[0])]
    ordered_after = [d for _, d in sorted(after, key=lambda x: x[0])]
    breaches: list[Breach] = []
    figures_before: dict[str, float] = {}
    figures_after: dict[str, float] = {}
    for figure in FIGURES:
        b = summary(figure, [v for d in ordered_before if (v := value_at(d, figure.path)) is not None])
        a = summary(figure, [v for d in ordered_after if (v := value_at(d, figure.path)) is not None])
        if b is None or a is None:
            continue
        figures_before[figure.name] = b
        figures_after[figure.name] = a
        if worse(figure, b, a, tolerance_pct):
            breaches.append(Breach(figure.name, b, a))
    return breaches, figures_before, figures_after


def boot_count(birth: Any) -> int | None:
    """`boot.n` of a stored birth certificate."""
    boot = birth.get("boot") if isinstance(birth, dict) else None
    n = boot.get("n") if isinstance(boot, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None
