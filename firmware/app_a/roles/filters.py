# Pre-filtering of readings on the device. Pure code (MicroPython and CPython).
#   Median(n)               spike rejection: the median of the last n samples
#   ByException(band, max_ms) report by exception: a value is sent when it moved at least `band`
#                           from the last one sent, or when max_ms passed without sending
#   Alarm(hi, hyst)         raised at >= hi, cleared only at <= hi - hyst (no chatter)


class Median:
    def __init__(self, n=5):
        self.n = n
        self.window = []

    def add(self, v):
        w = self.window
        w.append(v)
        if len(w) > self.n:
            w.pop(0)
        s = sorted(w)
        return s[len(s) // 2]


class ByException:
    def __init__(self, band, max_ms):
        self.band = band
        self.max_ms = max_ms
        self.sent = None
        self.sent_at = 0

    def due(self, v, now_ms):
        # True when v should be reported now; the caller then reports it.
        if (self.sent is None or abs(v - self.sent) >= self.band
                or now_ms - self.sent_at >= self.max_ms):
            self.sent = v
            self.sent_at = now_ms
            return True
        return False


class Alarm:
    def __init__(self, hi, hyst):
        self.hi = hi
        self.hyst = hyst
        self.on = False

    def update(self, v):
        # "start", "end" or None
        if not self.on and v >= self.hi:
            self.on = True
            return "start"
        if self.on and v <= self.hi - self.hyst:
            self.on = False
            return "end"
        return None
