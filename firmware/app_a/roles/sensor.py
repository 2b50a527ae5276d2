# The environmental sensor node: PM2.5/PM10 from an SDS011 on a UART, temperature and humidity
# from a DHT22, filtered on the device (median, report by exception with a heartbeat, alarms with
# hysteresis) so only what matters is sent. Desired state "sensor" (all optional):
#   {"median": 5, "max_silent_s": 300,
#    "deadband": {"pm25": 2, "pm10": 3, "temp_c": 0.3, "rh": 2},
#    "alarms": {"pm25": {"hi": 55, "hyst": 5}}}
import time

from roles.filters import Alarm, ByException, Median
from roles.sds011 import Parser

NAMES = ("pm25", "pm10", "temp_c", "rh")
DEADBAND = {"pm25": 2, "pm10": 3, "temp_c": 0.3, "rh": 2}
TH_MS = 2000  # the DHT22 is read this often (its own limit is 0.5 Hz)


class Sensor:
    name = "sensor"
    key = "sensor"

    def __init__(self, device, cfg):
        self.device = device
        self.hal = device.hal
        self.uart = device.hal.uart(getattr(cfg, "sds011_port", "2"), 9600)
        self.parser = Parser()
        self.th = getattr(cfg, "th_sensor", True)
        self._next_th = time.ticks_ms()
        self.alarm_count = 0
        self.apply({})

    def check(self, v):
        if not isinstance(v, dict):
            return "must be an object"
        n = v.get("median", 5)
        if not isinstance(n, int) or not 1 <= n <= 15:
            return "median: 1..15 samples"
        silent = v.get("max_silent_s", 300)
        if not isinstance(silent, int) or not 1 <= silent <= 86400:
            return "max_silent_s: 1..86400"
        for k in ("deadband", "alarms"):
            if not isinstance(v.get(k, {}), dict):
                return k + " must be an object by reading name"
        for x in v.get("deadband", {}).values():
            if not isinstance(x, (int, float)) or x < 0:
                return "a deadband is a number >= 0"
        for a in v.get("alarms", {}).values():
            if not isinstance(a, dict) or not isinstance(a.get("hi"), (int, float)):
                return "an alarm needs hi (and hyst)"
            if not isinstance(a.get("hyst", 0), (int, float)):
                return "an alarm's hyst is a number"
        return None

    def apply(self, v):
        n = v.get("median", 5)
        silent = v.get("max_silent_s", 300) * 1000
        band = dict(DEADBAND)
        band.update(v.get("deadband", {}))
        alarms = v.get("alarms", {})
        old = getattr(self, "ch", {})
        self.ch = {}
        for name in NAMES:
            a = alarms.get(name)
            alarm = Alarm(a["hi"], a.get("hyst", 0)) if a else None
            was = old[name][2] if name in old else None
            if was and was.on:  # an alarm open across the change: kept under its id, or ended
                if alarm:
                    alarm.on, alarm.eid = True, was.eid
                else:
                    w = old[name][0].window
                    self.device.event(was.eid, "alarm", "end", {
                        "reading": name, "value": w[-1] if w else was.hi, "hi": was.hi, "hyst": was.hyst})
            self.ch[name] = (Median(n), ByException(band[name], silent), alarm)

    def tick(self, now):
        report = {}
        data = self.uart.read()
        if data:
            for pm25, pm10 in self.parser.feed(data):  # every frame passes the filters
                self._sample("pm25", pm25 / 10, report)
                self._sample("pm10", pm10 / 10, report)
        if self.th and time.ticks_diff(now, self._next_th) >= 0:
            self._next_th = time.ticks_add(now, TH_MS)
            th = self.hal.th_read()
            if th:
                self._sample("temp_c", th[0], report)
                self._sample("rh", th[1], report)
        if report:
            self.device.telemetry(self.name, report)

    def _sample(self, name, raw, report):
        median, exc, alarm = self.ch[name]
        v = median.add(raw)
        if exc.due(v, self.device.meter.up_ms):
            report[name] = v
        phase = alarm.update(v) if alarm else None
        if phase == "start":
            self.alarm_count += 1
            alarm.eid = "alarm-%d-%d" % (self.device.counters.boots, self.alarm_count)
        if phase:
            self.device.event(alarm.eid, "alarm", phase, {
                "reading": name, "value": v, "hi": alarm.hi, "hyst": alarm.hyst})

    def figures(self):
        return {"frames": self.parser.good, "bad": self.parser.bad, "alarms": self.alarm_count}

    def stop(self):
        pass
