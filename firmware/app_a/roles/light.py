# The smart light controller: runs the light program (desired state "light", see
# light_program.py) by itself, online or not, from the copy on flash; drives the lamp by PWM
# and watches its current to report lamp failure and day-burning, burning hours and energy.
#
# Heap: the program's code (light_program.py, sun.py) is imported only to evaluate the level,
# which happens when the level can change (a step, local midnight, an override's start or end,
# a new program, the clock becoming known or going back) and is dropped right after; between
# evaluations the role keeps the level, the time of the next change and today's sun times.
import sys
import time

import store

STATE = "light.json"  # {"burn_s", "mwh", "ovr"}: counters and the IOC's command overrides
EVAL_MS = 1000  # the clock and the lamp current are looked at once a second
SETTLE_MS = 3000  # after a level change the current needs this long to follow
SAMPLES = 3  # samples in a row that start or end a lamp-failure or day-burning episode
SAVE_MS = 600000  # counters go to flash this often (and at a clean stop): flash wear is bounded
MAX_CMD_OVERRIDES = 8  # overrides from commands kept in light.json; the oldest goes first
LAZY = ("roles.light_check", "roles.light_program", "roles.sun", "roles")


def _forget():
    # Drop the modules only an evaluation or a check needs, so their code leaves the heap.
    for name in LAZY:
        sys.modules.pop(name, None)


def _check(name, value):
    try:
        import roles.light_check as c
        return getattr(c, name)(value)
    finally:
        _forget()


class Episode:
    # A condition that must hold (or stop holding) for SAMPLES samples in a row before it is
    # reported; one event id from start to end.
    def __init__(self, device, etype):
        self.device = device
        self.etype = etype
        self.on = False
        self.streak = 0
        self.count = 0

    def update(self, cond, data):
        if cond == self.on:
            self.streak = 0
            return
        self.streak += 1
        if self.streak < SAMPLES:
            return
        self.streak = 0
        self.on = cond
        if cond:
            self.count += 1
        eid = "%s-%d-%d" % (self.etype, self.device.counters.boots, self.count)
        self.device.event(eid, self.etype, "start" if cond else "end", data)


class Light:
    name = "light"
    key = "light"

    def __init__(self, device, cfg):
        self.device = device
        self.hal = device.hal
        self.where = (getattr(cfg, "lat", 0.0), getattr(cfg, "lon", 0.0), getattr(cfg, "tz_min", 0))
        self.min_ma = getattr(cfg, "lamp_min_ma", 50)
        self.volts = getattr(cfg, "lamp_v", 230)
        self.period_ms = cfg.telemetry_period_s * 1000
        saved = store.read_json(STATE, {})
        self.burn_ms = saved.get("burn_s", 0) * 1000
        self.mwh = saved.get("mwh", 0)
        self._uj = 0  # energy below one mWh, in microjoules (mA x V x ms)
        self.cmd_ovr = saved.get("ovr", [])
        self.doc = {}  # the program (desired state "light")
        self.level = None
        self.source = None
        self.ma = 0
        now = time.ticks_ms()
        self._changed = self._last = self._next_eval = self._next_tel = now
        self._next_save = time.ticks_add(now, SAVE_MS)
        self._dirty = True  # evaluate at the next tick
        self._settle_report = False  # a reading is sent once the current has followed a level change
        self._eval_unix = None  # the clock at the last evaluation
        self._change = None  # Unix ms of the next possible level change (None: clock unknown)
        self._sun = None  # (local day, sunrise, sunset in minutes) of the last evaluation's day
        self._tz = self.where[2]
        self.failure = Episode(device, "lamp_failure")
        self.day_burning = Episode(device, "day_burning")
        self.commands = {"light.override": self.override}  # <role>.<command>, as the contract names them

    # -- desired state and commands -------------------------------------------------------------

    def check(self, value):
        return _check("check", value)

    def apply(self, value):
        # Called while a message is being handled: the evaluation waits for the next tick.
        self.doc = value
        self._sun = None
        self._dirty = True
        self._next_eval = time.ticks_ms()

    def override(self, args):
        # {"level": 0..100, "until": ms, "from": ms (default now)} or {"clear": true}
        if args.get("clear"):
            self.cmd_ovr = []
        else:
            error = _check("check_override", args)
            if error:
                return "error", error
            o = {"level": args["level"], "until": args["until"]}
            if "from" in args:
                o["from"] = args["from"]
            if len(self.cmd_ovr) >= MAX_CMD_OVERRIDES:
                self.cmd_ovr.pop(0)  # the oldest goes
            self.cmd_ovr.append(o)
        self._save()
        self._dirty = True
        # a reading of the settled current follows, even if the level stays as it was (a lamp test)
        self._next_eval = self._changed = time.ticks_ms()
        self._settle_report = True
        return "ok", {"overrides": len(self.cmd_ovr)}

    # -- the loop -------------------------------------------------------------------------------

    def tick(self, now):
        if time.ticks_diff(now, self._next_eval) < 0:
            return
        self._next_eval = time.ticks_add(now, EVAL_MS)
        unix = self.hal.now_ms()
        self._meter(now)
        last = self._eval_unix
        if (self._dirty or (unix is None) != (last is None)
                or unix is not None and (unix < last or unix >= self._change)):
            self._evaluate(unix, now)  # out of heap: raises, and the next tick tries again
        settled = time.ticks_diff(now, self._changed) >= SETTLE_MS
        data = {"level": self.level, "ma": self.ma}
        if settled:
            self.failure.update(self.level > 0 and self.ma < self.min_ma, data)
            if self._settle_report:  # the settled current of a new level (what a check at the pole reads)
                self._settle_report = False
                self._telemetry(now)
        self.day_burning.update(self.ma >= self.min_ma and self._sun_up(unix), data)
        if time.ticks_diff(now, self._next_tel) >= 0:
            self._telemetry(now)
        if time.ticks_diff(now, self._next_save) >= 0:
            self._save()

    def _evaluate(self, unix, now):
        try:
            import roles.light_program as lp
            p = lp.Program(self.doc, *self.where)
            if unix is not None and self.cmd_ovr:
                kept = [o for o in self.cmd_ovr if o["until"] > unix]
                if len(kept) != len(self.cmd_ovr):
                    self.cmd_ovr = kept  # expired overrides are forgotten
                    self._save()
            ovr = self.doc.get("overrides", []) + self.cmd_ovr
            level, source = lp.level_at(p, ovr, unix)
            self._change = lp.next_change(p, ovr, unix)
            self._tz = p.tz_min
            if unix is not None:
                day = p.local(unix)[0]
                if self._sun is None or self._sun[0] != day:
                    self._sun = (day, p.sun(day, True), p.sun(day, False))
        finally:
            _forget()
        self._eval_unix = unix
        self._dirty = False
        if level != self.level or source != self.source:
            self.device.log("light: level %d (%s)" % (level, source))
            self.hal.out("lamp", level * 10)
            self.level = level
            self.source = source
            self._changed = now
            self._settle_report = True
            self._telemetry(now)

    def _meter(self, now):
        # Burning hours and energy from the measured current, integrated between samples.
        dt = time.ticks_diff(now, self._last)
        self._last = now
        ma = self.ma
        if ma >= self.min_ma:
            self.burn_ms += dt
            self._uj += ma * self.volts * dt
            self.mwh += self._uj // 3600000
            self._uj %= 3600000
        self.ma = self.hal.adc("current_ma")

    def _sun_up(self, unix):
        if unix is None or self._sun is None:
            return False
        t = unix // 60000 + self._tz
        day, rise, sset = self._sun
        if t // 1440 != day or rise is None or sset is None:
            return False  # not evaluated for today yet, or polar day or night: no judgement
        return rise <= t % 1440 < sset

    def _telemetry(self, now):
        self._next_tel = time.ticks_add(now, self.period_ms)
        self.device.telemetry(self.name, {
            "level": self.level, "ma": self.ma, "burn_h": round(self.burn_ms / 3600000, 3),
            "energy_wh": round(self.mwh / 1000, 3)})

    def _save(self):
        self._next_save = time.ticks_add(time.ticks_ms(), SAVE_MS)
        store.write_json(STATE, {"burn_s": self.burn_ms // 1000, "mwh": self.mwh,
                                 "ovr": self.cmd_ovr})

    def figures(self):
        return {"level": self.level, "failures": self.failure.count,
                "day_burning": self.day_burning.count}

    def stop(self):
        self._save()
