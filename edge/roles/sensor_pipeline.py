"""What the sensor role does with each sample, without I/O: despike, compress, aggregate, alarm.

Per reading (e.g. `pm25`): median of the last n samples (spike rejection), then
- an alarm with hysteresis on the despiked value (`AlarmChange`s for events);
- report by exception: swinging door (`sdt`) or mixed piecewise-linear (`pla`, fewer points at the
  same error, sent in bursts when a chain of segments ends), for both linear interpolation between
  the points sent is within `max_error` of every despiked sample; or a plain deadband (`deadband`,
  holding the last value sent is within `max_error`); all with a maximum interval between points;
- min/max/mean per window (a minute), when `aggregate_ms` is set.
"""

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from edge.filters import Deadband, HysteresisAlarm, Median, MixedPla, SwingingDoor, WindowAggregator
from edge.filters.aggregate import Aggregate

Compression = Literal["sdt", "pla", "deadband"]


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    median: int
    max_error: float
    max_interval_ms: int
    compression: Compression
    aggregate_ms: int | None
    alarm_high: float | None = None
    alarm_hysteresis: float = 0.0


@dataclass(frozen=True, slots=True)
class AlarmChange:
    reading: str
    phase: Literal["start", "end"]
    value: float
    high: float
    hysteresis: float


@dataclass(slots=True)
class Output:
    """What one sample (or a flush) produced: points by time, closed aggregates, alarm changes."""

    points: dict[int, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    aggregates: dict[int, dict[str, Aggregate]] = field(default_factory=lambda: defaultdict(dict))
    alarms: list[AlarmChange] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.points or self.aggregates or self.alarms)


class Channel:
    def __init__(self, name: str, config: ChannelConfig) -> None:
        self.name = name
        self.config = config
        self.median = Median(config.median)
        self.compressor: SwingingDoor | MixedPla | Deadband = (
            SwingingDoor(config.max_error, config.max_interval_ms)
            if config.compression == "sdt"
            else MixedPla(config.max_error, config.max_interval_ms)
            if config.compression == "pla"
            else Deadband(config.max_error, config.max_interval_ms)
        )
        self.aggregator = WindowAggregator(config.aggregate_ms) if config.aggregate_ms else None
        self.alarm = (
            HysteresisAlarm(config.alarm_high, config.alarm_hysteresis) if config.alarm_high is not None else None
        )
        self.last: float | None = None

    def add(self, t_ms: int, raw: float, out: Output) -> None:
        value = self.median.add(raw)
        self.last = value
        if isinstance(self.compressor, SwingingDoor | MixedPla):
            for t, v in self.compressor.add(t_ms, value):
                out.points[t][self.name] = v
        elif self.compressor.due(t_ms, value):
            out.points[t_ms][self.name] = value
        if self.aggregator is not None and (closed := self.aggregator.add(t_ms, value)) is not None:
            out.aggregates[closed.start_ms][self.name] = closed
        if self.alarm is not None and (phase := self.alarm.update(value)) is not None:
            out.alarms.append(AlarmChange(self.name, phase, value, self.alarm.high, self.alarm.hysteresis))

    def tick(self, now_ms: int, out: Output) -> None:
        """Close an aggregate window the sensor left without a sample."""
        if self.aggregator is not None and (closed := self.aggregator.close(now_ms)) is not None:
            out.aggregates[closed.start_ms][self.name] = closed

    def flush(self, out: Output) -> None:
        if isinstance(self.compressor, SwingingDoor | MixedPla):
            for t, v in self.compressor.flush():
                out.points[t][self.name] = v


class Pipeline:
    """All channels of one sensor; channels are made on first sight of a reading name."""

    def __init__(self, configs: Mapping[str, ChannelConfig], default: ChannelConfig) -> None:
        self._configs = dict(configs)
        self._default = default
        self.channels: dict[str, Channel] = {}

    def add(self, t_ms: int, readings: Mapping[str, float]) -> Output:
        out = Output()
        for name, raw in readings.items():
            channel = self.channels.get(name)
            if channel is None:
                channel = self.channels[name] = Channel(name, self._configs.get(name, self._default))
            channel.add(t_ms, raw, out)
        return out

    def tick(self, now_ms: int) -> Output:
        out = Output()
        for channel in self.channels.values():
            channel.tick(now_ms, out)
        return out

    def flush(self) -> Output:
        out = Output()
        for channel in self.channels.values():
            channel.flush(out)
        return out

    def take_over(self, old: "Pipeline") -> Output:
        """Carry the alarms open in `old` (the settings before a desired-state change) into this
        pipeline: a reading whose alarm the new settings keep stays open under its event (ended
        later by the new threshold and hysteresis); one whose alarm they drop ends now."""
        out = Output()
        for name, before in old.channels.items():
            if before.alarm is None or not before.alarm.active:
                continue
            channel = self.channels.get(name)
            if channel is None:
                channel = self.channels[name] = Channel(name, self._configs.get(name, self._default))
            if channel.alarm is not None:
                channel.alarm.active = True
            else:
                value = before.last if before.last is not None else before.alarm.high
                out.alarms.append(AlarmChange(name, "end", value, before.alarm.high, before.alarm.hysteresis))
        return out

    @property
    def active_alarms(self) -> int:
        return sum(1 for c in self.channels.values() if c.alarm is not None and c.alarm.active)
