# A simulated sensor: a stand-in role that exercises the role interface and telemetry.
import random
import time


class Sim:
    name = "sim"

    def __init__(self, device, cfg):
        self.device = device
        self.period_ms = cfg.telemetry_period_s * 1000
        self._next = time.ticks_ms()
        self.count = 0

    def tick(self, now):
        if time.ticks_diff(now, self._next) < 0:
            return
        self._next = time.ticks_add(now, self.period_ms)
        self.count += 1
        # Whole tenths of a degree: the single-precision floats of an ESP32 print them cleanly.
        temp_c = (280 + random.getrandbits(6)) / 10
        self.device.telemetry(self.name, {"temp_c": temp_c, "count": self.count})

    def figures(self):
        return {"readings": self.count}

    def stop(self):
        pass
