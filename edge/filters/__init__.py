"""Signal processing for sensor readings: pure code, no I/O, no MQTT, no clock of its own.

Every filter takes `(t_ms, value)` samples in time order and says what to send:

| module | what it does |
|---|---|
| `median.py` | `Median(n)`: spike rejection, the median of the last n samples |
| `deadband.py` | `Deadband(band, max_interval_ms)`: report by exception, with a heartbeat |
| `swinging_door.py` | `SwingingDoor(max_error, max_interval_ms)`: SDT compression; `reconstruct`, `max_error` |
| `pla.py` | `MixedPla(max_error, max_interval_ms)`: mixed piecewise-linear, fewer points than SDT |
| `aggregate.py` | `WindowAggregator(window_ms)`: min/max/mean per window (a minute) |
| `alarm.py` | `HysteresisAlarm(high, hysteresis)`: raised at high, cleared at high - hysteresis |
"""

from edge.filters.aggregate import Aggregate, WindowAggregator
from edge.filters.alarm import HysteresisAlarm
from edge.filters.deadband import Deadband
from edge.filters.median import Median
from edge.filters.pla import MixedPla
from edge.filters.swinging_door import Point, SwingingDoor, hold, max_error, reconstruct

__all__ = [
    "Aggregate",
    "Deadband",
    "HysteresisAlarm",
    "Median",
    "MixedPla",
    "Point",
    "SwingingDoor",
    "WindowAggregator",
    "hold",
    "max_error",
    "reconstruct",
]
