# Pure role logic under the real MicroPython: SDS011 framing, filters, light programs.
#   micropython mp_roles.py <slot folder> <case> [input file]    prints "ok <case>" or fails
import sys

sys.path.insert(0, sys.argv[1])
from roles.filters import Alarm, ByException, Median
from roles.light_program import Program, level_at, next_change
from roles.sds011 import Parser, frame


def expect(actual, wanted):
    if actual != wanted:
        raise AssertionError(f"{actual!r} != {wanted!r}")


def sds011_frames():
    p = Parser()
    f = frame(123, 456)
    expect(p.feed(f), [(123, 456)])  # valid
    bad = bytearray(f)
    bad[8] ^= 0xFF
    expect(p.feed(bytes(bad)), [])  # corrupt checksum
    tail = bytearray(f)
    tail[9] = 0
    expect(p.feed(bytes(tail) + f), [(123, 456)])  # bad tail, then a good one right after
    expect(p.feed(f[:6]), [])  # truncated ...
    expect(p.feed(frame(1, 2)), [(1, 2)])  # ... and abandoned: the next frame is found
    expect(p.feed(b"\x00\xaa\xab garbage \xaa"), [])  # interleaved garbage, a dangling AA
    expect(p.feed(b"\xc0" + f[2:] + b"\xaa\xc0\x01" + frame(7, 8)), [(123, 456), (7, 8)])
    expect(p.feed(f[:3]) + p.feed(f[3:7]) + p.feed(f[7:]), [(123, 456)])  # bytes one by one
    expect(len(p.buf) <= 10, True)
    expect(p.good, 6)


def filters_series():
    # argv[3]: one value a line (a real hourly temperature series); prints what is reported
    band, max_ms = float(sys.argv[4]), int(sys.argv[5])
    med, exc = Median(3), ByException(band, max_ms)
    n = 0
    with open(sys.argv[3]) as f:
        for line in f:
            v = med.add(float(line))
            if exc.due(v, n * 3600000):
                print(n, v)
            n += 1


def alarm_hysteresis():
    a = Alarm(50, 10)
    seq = [10, 49.9, 50, 60, 45, 41, 40.1, 40, 45, 55, 39]
    expect([a.update(v) for v in seq],
           [None, None, "start", None, None, None, None, "end", None, "start", "end"])
    expect(Median(5).add(3), 3)
    m = Median(3)
    # a spike passes only while the window fills
    expect([m.add(v) for v in (10, 500, 11, 12, -300, 13)], [10, 500, 11, 12, 11, 12])


DAY = 20522 * 86400000  # 2026-03-10 00:00 UTC, a Tuesday
TZ = 420


def local(h, m, day=0):
    return DAY + (day * 1440 + h * 60 + m - TZ) * 60000


def light_program():
    p = Program({"tz_min": TZ, "lat": 11.535, "lon": 106.883, "default": 5, "failsafe": 70,
                 "rules": [
                     {"dates": ["2026-03-12"], "steps": [{"at": "19:00", "level": 100}]},
                     {"days": [5, 6], "steps": [{"at": "20:00", "level": 60}, {"at": "06:00", "level": 0}]},
                     {"days": [0, 1, 2, 3], "steps": [
                         {"sun": "set", "off": 10, "level": 80}, {"at": "23:00", "level": 40},
                         {"sun": "rise", "off": -10, "level": 0}]}]})
    ovr = [{"level": 100, "from": local(12, 0), "until": local(12, 30)}]
    expect(level_at(p, [], None), (70, "failsafe"))
    expect(level_at(p, ovr, local(12, 10)), (100, "override"))
    expect(level_at(p, ovr, local(12, 30)), (0, "program"))  # expired
    expect(level_at(p, [], local(17, 0)), (0, "program"))
    expect(level_at(p, [], local(19, 0)), (80, "program"))  # after sunset (~18:04) + 10
    expect(level_at(p, [], local(23, 30)), (40, "program"))
    expect(level_at(p, [], local(2, 0, 1)), (40, "program"))  # Wednesday night: carried over
    expect(level_at(p, [], local(7, 0, 1)), (0, "program"))
    expect(level_at(p, [], local(18, 0, 2)), (40, "program"))  # Thursday 12th: Wednesday's night
    expect(level_at(p, [], local(19, 0, 2)), (100, "program"))  # then the date rule wins
    expect(level_at(p, [], local(21, 0, 3)), (5, "program"))  # Friday: no rule, the default
    expect(level_at(p, [], local(21, 0, 4)), (60, "program"))  # Saturday
    expect(level_at(p, [], local(3, 0, 5)), (60, "program"))  # Sunday 03:00: Saturday's carries
    # When the level may change next: the next step, local midnight, an override's ends
    expect(next_change(p, [], None), None)
    expect(next_change(p, [], local(22, 0)), local(23, 0))
    expect(next_change(p, [], local(23, 30)), local(0, 0, 1))
    expect(next_change(p, ovr, local(11, 0)), local(12, 0))
    expect(next_change(p, ovr, local(12, 0)), local(12, 30))
    expect(next_change(p, [], local(19, 30, 2)), local(0, 0, 3))  # the date rule's last step


class _Device:
    # what roles.sensor uses of the device: its events, the HAL's UART and DHT22, counters, meter
    class hal:
        @staticmethod
        def uart(port, baud):
            return None

    class counters:
        boots = 1

    class meter:
        up_ms = 0

    def __init__(self):
        self.events = []

    def event(self, eid, kind, phase, data):
        self.events.append((eid, kind, phase, data["reading"]))


def sensor_reconfigured():
    # an alarm open across a new "sensor" document: kept under its id, or ended if dropped
    from roles.sensor import Sensor

    class cfg:
        th_sensor = False

    dev = _Device()
    s = Sensor(dev, cfg)
    s.apply({"alarms": {"pm25": {"hi": 50, "hyst": 5}, "pm10": {"hi": 80}}})
    report = {}
    s._sample("pm25", 60, report)
    s._sample("pm10", 90, report)
    expect([e[2] for e in dev.events], ["start", "start"])
    pm25_id, pm10_id = dev.events[0][0], dev.events[1][0]
    s.apply({"alarms": {"pm25": {"hi": 70, "hyst": 5}}})  # pm25 kept (a new hi), pm10 dropped
    expect(dev.events[2], (pm10_id, "alarm", "end", "pm10"))
    s._sample("pm25", 60, report)  # the median of 60, 60: at or below the new hi - hyst: ends
    expect(dev.events[3], (pm25_id, "alarm", "end", "pm25"))
    expect(len(dev.events), 4)


CASES = {f.__name__: f for f in (sds011_frames, filters_series, alarm_hysteresis, light_program,
                                 sensor_reconfigured)}
CASES[sys.argv[2]]()
if sys.argv[2] != "filters_series":
    print("ok", sys.argv[2])
