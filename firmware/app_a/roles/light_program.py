# Light programs (desired state "light"): what level a lamp should burn at a given time. Pure
# code, on MicroPython and CPython alike. A program:
#   {"lat": 11.535, "lon": 106.883, "tz_min": 420,   where the lamp is (config.json has them too)
#    "default": 0,         level on a date no rule matches
#    "failsafe": 100,      level while the clock is unknown
#    "rules": [            calendar rules; the FIRST that matches a date runs it (list order is
#      {"dates": ["2026-12-24", "01-01"], "steps": [...]},      priority); dates: a day, or
#      {"days": [5, 6], "steps": [...]},                        MM-DD every year; days: 0=Monday
#      {"steps": [...]}],                                       neither: every day
#    "overrides": [{"id": "o1", "level": 100, "from": ms, "until": ms}]}
# A step switches the level at a time of the local day: {"at": "23:00", "level": 50} or
# {"sun": "set"|"rise", "off": -15, "level": 100} (minutes after sunset/sunrise, computed on the
# device). Before a date's first step the last step of the day before still holds (a night
# program goes past midnight); a day without a rule runs the default. The latest-starting
# override in force wins over the program. Levels are percent, 0..100. No daylight saving time
# (Viet Nam has none): tz_min is a fixed offset. The checks (and the bounds) are in light_check.py,
# imported only when a program or an override arrives. The role (light.py) imports this module and sun.py
# only to evaluate, at the next moment the level can change (next_change), and then drops them.
from roles import sun


def civil(day):
    # (year, month, day) of a day count since 1970-01-01 (H. Hinnant's civil_from_days)
    z = day + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


class Program:
    def __init__(self, p, lat=0.0, lon=0.0, tz_min=0):
        self.p = p
        self.lat = p.get("lat", lat)
        self.lon = p.get("lon", lon)
        self.tz_min = p.get("tz_min", tz_min)
        self.default = p.get("default", 0)
        self.failsafe = p.get("failsafe", 100)
        self._cache = {}  # day -> sorted [(minute, level)]; at most three days kept

    def local(self, now_ms):
        # (local day since 1970, minute of the day)
        t = now_ms // 60000 + self.tz_min
        return t // 1440, t % 1440

    def rule(self, day):
        y, m, d = civil(day)
        ymd = "%04d-%02d-%02d" % (y, m, d)
        md = ymd[5:]
        wd = (day + 3) % 7  # 1970-01-01 was a Thursday
        for r in self.p.get("rules", ()):
            if "dates" in r:
                if ymd in r["dates"] or md in r["dates"]:
                    return r
            elif "days" in r:
                if wd in r["days"]:
                    return r
            else:
                return r
        return None

    def sun(self, day, rising):
        return sun.event(day, self.lat, self.lon, self.tz_min, rising)

    def steps(self, day):
        # The day's switch points as sorted [(minute, level)], or None if no rule covers it.
        if day in self._cache:
            return self._cache[day]
        r = self.rule(day)
        out = None
        if r is not None:
            out = []
            for s in r["steps"]:
                if "sun" in s:
                    t = self.sun(day, s["sun"] == "rise")
                    if t is None:
                        continue  # polar day or night: the sun step does not happen
                    minute = int(t + 0.5) + s.get("off", 0)
                else:
                    at = s["at"]  # "HH:MM", checked by light_check.py
                    minute = int(at[:2]) * 60 + int(at[3:])
                out.append((min(1439, max(0, minute)), s["level"]))
            out.sort()
        if len(self._cache) > 2:  # today and yesterday are what a clock asks for
            self._cache = {}
        self._cache[day] = out
        return out

    def scheduled(self, now_ms):
        # The program's level at now_ms, overrides aside.
        day, minute = self.local(now_ms)
        steps = self.steps(day)
        if steps is None:
            return self.default
        level = None
        for m, lv in steps:
            if m <= minute:
                level = lv
        if level is None:
            before = self.steps(day - 1)
            level = before[-1][1] if before else self.default
        return level


def active_override(overrides, now_ms):
    best = None
    for o in overrides:
        if o.get("from", 0) <= now_ms < o["until"]:
            if best is None or o.get("from", 0) >= best.get("from", 0):
                best = o
    return best


def level_at(program, overrides, now_ms):
    # (level, source): source is "failsafe" (clock unknown), "override" or "program"
    if now_ms is None:
        return program.failsafe, "failsafe"
    o = active_override(overrides, now_ms)
    if o is not None:
        return o["level"], "override"
    return program.scheduled(now_ms), "program"


def next_change(program, overrides, now_ms):
    # The first Unix ms after now_ms at which level_at() may answer differently: the day's next
    # step, the next local midnight (a new day may run another rule), or an override's start or
    # end. None while the clock is unknown (the answer changes only when it becomes known).
    if now_ms is None:
        return None
    day, minute = program.local(now_ms)
    at = day + 1, 0
    for m, _ in program.steps(day) or ():
        if m > minute:
            at = day, m
            break
    t = ((at[0] * 1440 + at[1]) - program.tz_min) * 60000
    for o in overrides:
        for k in ("from", "until"):
            if now_ms < o.get(k, 0) < t:
                t = o[k]
    return t
