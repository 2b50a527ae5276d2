"""`sensor`: serial sensors (an SDS011 on a UART, or Modbus RTU registers), pre-filtered here so
only what matters is sent.

Each sample goes through `sensor_pipeline.Pipeline`: median spike rejection, report by exception
(`compression`: swinging door `sdt`, the default; mixed piecewise-linear `pla`; or `deadband`; all
with a stated maximum error and a maximum interval), per-minute
min/max/mean aggregates, alarms with hysteresis. It sends:

- telemetry `{"<reading>": value, ...}` at `at_ms` t: the compressed points, one message per time;
  `at_ms` (the message's, beside `r`) is the time the values stand for (a swinging-door point is
  sent when the door closes, after its time), and the fleet files the point under it;
- telemetry `{"window_s": 60, "<reading>_min"/"_max"/"_mean"/"_n": ...}` at `at_ms` start, per window;
- events `alarm` (`start`/`end`, category `other`, data `{reading, value, high, hysteresis}`).

Desired state `sensor` (all optional; the same keys as the ESP32 sensor node):
`{"median": 5, "max_silent_s": 300, "deadband": {"pm25": 2}, "alarms": {"pm25": {"hi": 55, "hyst": 5}}}`;
`deadband` sets a reading's maximum error whatever the compression.

Everything goes through the store-and-forward queue, so an outage only delays it. A port that
fails is counted (`read_errors`) and reopened after 1 s, doubling up to `reopen_max_s`.
"""

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from edge.commands import CommandHandler, Reply
from edge.errors import DesiredStateError
from edge.roles.base import Number, Role, RoleContext, RoleSettings
from edge.roles.sensor_pipeline import ChannelConfig, Compression, Output, Pipeline
from edge.roles.sensor_sources import ModbusSource, Register, Sds011Source, Source, SourceError

TICK_S = 1.0  # how often a quiet sensor's aggregate windows are checked


class AlarmSettings(RoleSettings):
    high: float
    hysteresis: float = Field(default=0.0, ge=0)


class RegisterSettings(RoleSettings):
    name: str = Field(min_length=1, max_length=40)
    address: int = Field(ge=0, le=0xFFFF)
    kind: Literal["holding", "input"] = "holding"
    scale: float = 1.0
    signed: bool = False


class SensorSettings(RoleSettings):
    source: Literal["sds011", "modbus"] = "sds011"
    port: str = Field(min_length=1)  # /dev/ttyAMA0, /dev/ttyUSB0, a pty
    baudrate: int = Field(default=9600, gt=0)
    # Modbus RTU
    modbus_device_id: int = Field(default=1, ge=1, le=247)
    registers: list[RegisterSettings] = Field(default_factory=list, max_length=32)
    poll_s: float = Field(default=1.0, ge=0.05, le=3600)
    modbus_timeout_s: float = Field(default=1.0, gt=0, le=30)
    # filtering
    median: int = Field(default=5, ge=1, le=15)
    # sdt by default: its points trail the samples by one segment, pla's by a chain of them (up
    # to max_interval_s) for 1.17-1.65x fewer points at the same error (benchmarks/sensor_compression.py)
    compression: Compression = "sdt"
    max_error: dict[str, float] = Field(default_factory=dict)  # per reading
    default_max_error: float = Field(default=1.0, ge=0)
    max_interval_s: float = Field(default=300.0, gt=0, le=86_400)
    aggregate_s: int = Field(default=60, ge=0, le=86_400)  # 0: no aggregates
    alarms: dict[str, AlarmSettings] = Field(default_factory=dict)
    reopen_max_s: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check_source(self) -> "SensorSettings":
        if self.source == "modbus" and not self.registers:
            raise ValueError("a modbus source needs registers")
        if any(v < 0 for v in self.max_error.values()):
            raise ValueError("max_error values must not be negative")
        return self


def _wall_ms() -> int:
    return int(time.time() * 1000)


class SensorRole(Role):
    def __init__(self, settings: SensorSettings, context: RoleContext) -> None:
        super().__init__(context)
        self.settings = settings
        self.samples = 0
        self.points_sent = 0
        self.telemetry_sent = 0
        self.aggregates_sent = 0
        self.alarm_events = 0
        self.read_errors = 0
        self.reopens = 0
        self.source: Source = self._make_source()
        self._desired: Mapping[str, Any] = {}
        self._alarm_ids: dict[str, str] = {}
        self._alarm_count = 0
        self._last_t = 0
        self.pipeline = self._make_pipeline()

    # -- configuration ----------------------------------------------------------------------

    def _make_source(self) -> Source:
        s = self.settings
        if s.source == "sds011":
            return Sds011Source(s.port, s.baudrate)
        registers = [Register(r.name, r.address, r.kind, r.scale, r.signed) for r in s.registers]
        return ModbusSource(s.port, s.baudrate, s.modbus_device_id, registers, s.poll_s, s.modbus_timeout_s)

    def _make_pipeline(self) -> Pipeline:
        s, d = self.settings, self._desired
        median = int(d.get("median", s.median))
        interval_ms = int(float(d.get("max_silent_s", s.max_interval_s)) * 1000)
        errors = {**s.max_error, **d.get("deadband", {})}
        alarms = {name: (a.high, a.hysteresis) for name, a in s.alarms.items()}
        alarms.update({name: (a["hi"], a.get("hyst", 0.0)) for name, a in d.get("alarms", {}).items()})

        def config(name: str | None) -> ChannelConfig:
            high, hyst = alarms.get(name, (None, 0.0)) if name else (None, 0.0)
            return ChannelConfig(
                median=median,
                max_error=float(errors.get(name, s.default_max_error) if name else s.default_max_error),
                max_interval_ms=interval_ms,
                compression=s.compression,
                aggregate_ms=s.aggregate_s * 1000 or None,
                alarm_high=high,
                alarm_hysteresis=float(hyst),
            )

        return Pipeline({name: config(name) for name in {*errors, *alarms}}, config(None))

    def check_desired(self, doc: Mapping[str, Any]) -> None:
        part = doc.get("sensor", {})
        if not isinstance(part, dict):
            raise DesiredStateError("sensor: must be an object")
        median = part.get("median", 5)
        if not isinstance(median, int) or isinstance(median, bool) or not 1 <= median <= 15:
            raise DesiredStateError("sensor.median: 1..15 samples")
        silent = part.get("max_silent_s", 300)
        if not _is_number(silent) or not 0 < silent <= 86_400:
            raise DesiredStateError("sensor.max_silent_s: a number of seconds, 0..86400")
        bands = part.get("deadband", {})
        if not isinstance(bands, dict) or not all(_is_number(v) and v >= 0 for v in bands.values()):
            raise DesiredStateError("sensor.deadband: an object of non-negative numbers")
        alarms = part.get("alarms", {})
        if not isinstance(alarms, dict) or not all(
            isinstance(a, dict) and _is_number(a.get("hi")) and _is_number(a.get("hyst", 0)) and a.get("hyst", 0) >= 0
            for a in alarms.values()
        ):
            raise DesiredStateError("sensor.alarms: each needs hi (and hyst >= 0)")

    def apply_desired(self, doc: Mapping[str, Any]) -> None:
        part = doc.get("sensor", {})
        if part == self._desired:
            return
        self._send(self.pipeline.flush(), _wall_ms())  # nothing held back is lost in the switch
        self._desired = dict(part)
        before, self.pipeline = self.pipeline, self._make_pipeline()
        self._send(self.pipeline.take_over(before), _wall_ms())  # open alarms carried over, or ended

    # -- the work ---------------------------------------------------------------------------

    async def run(self) -> None:
        delay = 1.0
        me = asyncio.current_task()
        while True:
            if me is not None and me.cancelling():  # a cancellation the serial library swallowed
                raise asyncio.CancelledError
            try:
                await self.source.open()
                delay = 1.0
                while True:
                    for sample in await self.source.read(TICK_S):
                        self.process(_wall_ms(), sample)
                    self.tick(_wall_ms())
            except SourceError as err:
                self.read_errors += 1
                self.context.log.warning("sensor: %s (retrying in %.0f s)", err, delay)
            finally:
                self.source.close()
            # what the door holds back is sent rather than kept for an unknown time
            self._send(self.pipeline.flush(), _wall_ms())
            self.reopens += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reopen_max_s)

    def process(self, t_ms: int, sample: Mapping[str, float]) -> None:
        """One sample (reading name -> value) taken at `t_ms`: filter it and send what is due."""
        self.samples += 1
        # Samples read together get distinct, increasing times: the door needs time to move.
        t_ms = self._last_t = max(t_ms, self._last_t + 1)
        self._send(self.pipeline.add(t_ms, sample), t_ms)

    def tick(self, now_ms: int) -> None:
        self._send(self.pipeline.tick(now_ms), now_ms)

    def _send(self, out: Output, now_ms: int) -> None:
        for t, values in sorted(out.points.items()):
            self.context.telemetry(values, at_ms=t)
            self.points_sent += len(values)
            self.telemetry_sent += 1
        for start, aggregates in sorted(out.aggregates.items()):
            readings: dict[str, Number] = {"window_s": self.settings.aggregate_s}
            for name, a in aggregates.items():
                readings.update(
                    {f"{name}_min": a.minimum, f"{name}_max": a.maximum, f"{name}_mean": a.mean, f"{name}_n": a.count}
                )
            self.context.telemetry(readings, at_ms=start)
            self.aggregates_sent += 1
            self.telemetry_sent += 1
        for change in out.alarms:
            if change.phase == "start":
                self._alarm_count += 1
                self._alarm_ids[change.reading] = f"alarm-{change.reading}-{now_ms}-{self._alarm_count}"
            event_id = self._alarm_ids.get(change.reading, f"alarm-{change.reading}-{now_ms}")
            self.context.event(
                event_id=event_id,
                event_type="alarm",
                phase=change.phase,
                category="other",
                data={
                    "reading": change.reading,
                    "value": change.value,
                    "high": change.high,
                    "hysteresis": change.hysteresis,
                },
            )
            self.alarm_events += 1

    # -- health and commands ----------------------------------------------------------------

    def health(self) -> dict[str, Number]:
        return {
            "samples": self.samples,
            "frames": self.source.frames,
            "bad": self.source.bad,
            "read_errors": self.read_errors,
            "reopens": self.reopens,
            "points": self.points_sent,
            "aggregates": self.aggregates_sent,
            "alarm_events": self.alarm_events,
            "alarms_active": self.pipeline.active_alarms,
        }

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"read": self._read, "flush": self._flush}

    async def _read(self, args: Mapping[str, Any]) -> Reply:
        """`sensor.read`: the latest despiked value of every reading (nothing is sent)."""
        return Reply({name: c.last for name, c in self.pipeline.channels.items() if c.last is not None})

    async def _flush(self, args: Mapping[str, Any]) -> Reply:
        """`sensor.flush`: send the points the swinging door holds back, now."""
        out = self.pipeline.flush()
        self._send(out, _wall_ms())
        return Reply({"points": sum(len(v) for v in out.points.values())})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
