"""A new `sensor` desired state while an alarm is open: the Pi's pipeline keeps the alarm open
under the new settings (it ends by the new threshold), and ends one the new settings drop — so the
fleet never sees an alarm `start` without its `end` (the ESP32 node: tests/firmware/mp/mp_roles.py,
sensor_reconfigured)."""

from edge.roles.sensor_pipeline import ChannelConfig, Pipeline


def config(high: float | None, hyst: float = 0.0) -> ChannelConfig:
    return ChannelConfig(median=1, max_error=1.0, max_interval_ms=60_000, compression="deadband",
                         aggregate_ms=None, alarm_high=high, alarm_hysteresis=hyst)


def test_an_open_alarm_is_carried_into_new_settings_or_ended() -> None:
    old = Pipeline({"pm25": config(50, 5), "pm10": config(80)}, config(None))
    raised = old.add(0, {"pm25": 60, "pm10": 90})
    assert [(a.reading, a.phase) for a in raised.alarms] == [("pm25", "start"), ("pm10", "start")]

    new = Pipeline({"pm25": config(70, 5)}, config(None))  # pm25 kept with a new high, pm10 dropped
    ended = new.take_over(old)
    assert [(a.reading, a.phase, a.value, a.high) for a in ended.alarms] == [("pm10", "end", 90, 80)]

    still = new.add(1000, {"pm25": 66})  # above the new high - hysteresis: no new start, no end
    assert still.alarms == []
    cleared = new.add(2000, {"pm25": 64})
    assert [(a.reading, a.phase, a.high) for a in cleared.alarms] == [("pm25", "end", 70)]


def test_nothing_open_nothing_sent() -> None:
    old = Pipeline({"pm25": config(50)}, config(None))
    old.add(0, {"pm25": 10})
    assert not Pipeline({"pm25": config(40)}, config(None)).take_over(old)
