# The loudspeaker node: plays WAV clips from flash through the amplifier (relay and volume by
# the HAL, samples to I2S or the host's sink), runs its broadcast schedule from the device clock
# online or not, lets emergencies pre-empt, and reports every broadcast as an event "playback"
# (start: started; end: completed or failed with a reason; once: failed before it started).
# Desired state "speaker":
#   {"volume": 70, "tz_min": 420,
#    "schedule": [{"id": "b1", "clip": "news", "at": unix_ms},                 one-off
#                 {"id": "b2", "clip": "anthem", "daily": "06:30", "days": [0, 1, 2, 3, 4]},
#                 {"id": "b3", "clip": "siren", "at": unix_ms, "emergency": true, "volume": 90}]}
# An entry's own volume (0..100) overrides the document's. `done` in speaker.json keeps only the
# ids of the schedule applied last (the fleet's ids are one per occurrence: it would grow for good).
# Commands: speaker.broadcast {"id", "clip", "emergency", "volume"}: now; speaker.clip_fetch {"name",
# "url", "sha256", "bytes"}: download over HTTP into clips/ within clip_budget_kb, one at a time, up
# to 4 waiting (clips no entry names, not playing, and not fetched in the last hour may
# be removed to make room: clip_room.py); speaker.clip_delete {"name"}.
import os
import struct
import sys
import time

import store

STATE = "speaker.json"  # {"done": {broadcast id: time of its last occurrence handled}}
CLIPS = "clips/"
GRACE_MS = 120000  # a broadcast still starts this late (a reboot, a clock set late)
MISSED_MS = 3600000  # later than GRACE_MS and up to this: reported failed "missed"
MAX_SCHEDULE = 32
QUEUE_MAX = 4  # broadcasts waiting behind the one playing; at the bound a new one fails "busy"
CHUNK = 512  # bytes per write; at most 8 per loop turn
AMP_OFF_MS = 2000  # the amplifier stays on this long after the last clip


def _volume(b):
    v = b.get("volume", 0)
    return isinstance(v, int) and 0 <= v <= 100


def _hhmm(s):
    try:
        return int(s[:2]) * 60 + int(s[3:5])
    except (ValueError, TypeError):
        return None


def wav(f):
    # (rate, bits, channels, data bytes) of an open WAV file positioned at its samples
    head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    fmt = None
    while True:
        h = f.read(8)
        if len(h) < 8:
            raise ValueError("no data chunk")
        size = struct.unpack("<I", h[4:])[0]
        if h[:4] == b"fmt ":
            b = f.read(size)
            fmt = struct.unpack("<HHIIHH", b[:16])
        elif h[:4] == b"data":
            if fmt is None or fmt[0] != 1:
                raise ValueError("not PCM")
            return fmt[2], fmt[5], fmt[1], size
        else:
            f.read(size)


class Speaker:
    name = "speaker"
    key = "speaker"

    def __init__(self, device, cfg):
        self.device = device
        self.hal = device.hal
        self.tz = getattr(cfg, "tz_min", 0)
        self.budget = getattr(cfg, "clip_budget_kb", 512) * 1024
        self.volume = 70
        self.schedule = []
        self.done = store.read_json(STATE, {}).get("done", {})
        self.play = None  # [broadcast, event id, file, sink, bytes/s, started, sent, total]
        self.queue = []
        self.fetches = []  # [(command id, args)] waiting to be downloaded, oldest first (clip_room.py)
        self.fetched = {}  # clip name: the device's uptime (ms) at its download (clip_room.py)
        self.played = 0
        self.failed = 0
        self._next = self.wake = time.ticks_ms()
        self._amp_off = None
        try:
            os.mkdir("clips")
        except OSError:
            pass
        self.commands = {"speaker.broadcast": self.broadcast, "speaker.clip_fetch": self.clip_fetch,
                         "speaker.clip_delete": self.clip_delete}  # <role>.<command>, as the contract names them

    # -- desired state and commands -------------------------------------------------------------

    def check(self, v):
        if not isinstance(v, dict):
            return "must be an object"
        s = v.get("schedule", [])
        if not isinstance(s, list) or len(s) > MAX_SCHEDULE:
            return "schedule: a list of at most %d" % MAX_SCHEDULE
        for b in s:
            if not isinstance(b, dict) or not isinstance(b.get("id"), str) or not b.get("clip"):
                return "a broadcast needs id and clip"
            if not isinstance(b.get("at"), int) and _hhmm(b.get("daily")) is None:
                return "a broadcast needs at (Unix ms) or daily (HH:MM)"
            if not _volume(b):
                return "%s: volume 0..100" % b["id"]
        if not _volume(v):
            return "volume: 0..100"
        return None

    def apply(self, v):
        self.schedule = v.get("schedule", [])
        ids = [b["id"] for b in self.schedule]
        gone = [k for k in self.done if k not in ids]
        if gone:  # an id not in the schedule is never looked at again
            for k in gone:
                del self.done[k]
            store.write_json(STATE, {"done": self.done})
        self.volume = v.get("volume", 70)
        self.tz = v.get("tz_min", self.tz)
        self._next = self.wake = time.ticks_ms()

    def broadcast(self, args):
        if not isinstance(args.get("id"), str) or not isinstance(args.get("clip"), str) or not _volume(args):
            return "error", "needs id and clip; volume 0..100"
        self._start(args, args["id"])
        return "ok", None

    def clip_fetch(self, args):
        # checked, and room made, by clip_room.py (loaded for the moment); queued if it fits
        try:
            import roles.clip_room as m
            status, detail = m.take(self, args)
        finally:  # its code (and the package's) does not stay in the heap
            m = None
            sys.modules.pop("roles.clip_room", None)
            sys.modules.pop("roles", None)
        return status, detail

    def clip_delete(self, args):
        try:
            os.remove(CLIPS + str(args.get("name")) + ".wav")
        except OSError:
            return "error", "no such clip"
        return "ok", None

    # -- the loop -------------------------------------------------------------------------------

    def tick(self, now):
        if self.fetches:
            cid, args = self.fetches.pop(0)
            try:
                import roles.clip_fetch as cf
                status, detail = cf.fetch(args, CLIPS, self.device.feed)
            finally:  # rarely needed: its code (and the package's) does not stay in the heap
                sys.modules.pop("roles.clip_fetch", None)
                sys.modules.pop("roles", None)
            if status == "ok":
                self.fetched[args["name"]] = self.device.meter.up_ms
            self.device.commands.finish(cid, status, detail)
        if self.play:
            self._feed(now)
        elif self._amp_off is not None and time.ticks_diff(now, self._amp_off) >= 0:
            self._amp_off = None
            self.hal.out("amp", 0)
        if time.ticks_diff(now, self._next) >= 0:
            self._next = time.ticks_add(now, self._scheduled())
            self.wake = self._next  # the device's loop waits no longer than this (device.py)

    def _occurrence(self, b, unix):
        # The broadcast's latest time at or before unix, or None
        if "at" in b:
            return b["at"] if b["at"] <= unix else None
        m = _hhmm(b["daily"])
        local = unix // 60000 + self.tz
        day = local // 1440
        if day * 1440 + m > local:
            day -= 1
        if "days" in b and (day + 3) % 7 not in b["days"]:
            return None
        return (day * 1440 + m - self.tz) * 60000

    def _scheduled(self):
        # Starts what is due; ms until the next look: 1 s, or sooner for a one-off entry due
        # sooner (then it starts within a loop turn of its time, not anywhere in the second after)
        unix = self.hal.now_ms()
        if unix is None:
            return 1000  # no clock, no schedule: nothing plays at a wrong time
        soon = 1000
        for b in self.schedule:
            at = b.get("at")
            if at is not None and unix < at < unix + soon:
                soon = at - unix
            occ = self._occurrence(b, unix)
            if occ is None or self.done.get(b["id"], -1) >= occ:
                continue
            eid = "%s@%d" % (b["id"], occ)
            late = unix - occ
            if late < GRACE_MS:
                self._start(b, eid)
            elif late < MISSED_MS:
                self._report(b, eid, "once", "failed", "missed")
            self.done[b["id"]] = occ
            store.write_json(STATE, {"done": self.done})
        return soon

    def _report(self, b, eid, phase, status, reason=None):
        data = {"broadcast": b["id"], "clip": b["clip"], "status": status}
        if reason:
            data["reason"] = reason
            self.failed += 1
        elif status == "completed":
            self.played += 1
        self.device.event(eid, "playback", phase, data)

    def _start(self, b, eid):
        if self.play:
            if b.get("emergency") and not self.play[0].get("emergency"):
                self._end("failed", "preempted")
            elif len(self.queue) >= QUEUE_MAX:
                self._report(b, eid, "once", "failed", "busy")
                return
            else:
                self.queue.append((b, eid))
                return
        try:
            f = open(CLIPS + b["clip"] + ".wav", "rb")
        except OSError:
            self._report(b, eid, "once", "failed", "no clip")
            return
        try:
            rate, bits, channels, total = wav(f)
        except (ValueError, IndexError) as e:
            f.close()
            self._report(b, eid, "once", "failed", "bad clip: %s" % e)
            return
        vol = b.get("volume", self.volume)
        self.hal.out("amp", 1)
        self.hal.out("volume", vol)
        self._amp_off = None
        sink = self.hal.audio(rate, bits, channels)
        self.play = [b, eid, f, sink, rate * bits // 8 * channels, time.ticks_ms(), 0, total]
        self.device.log("speaker: playing %s (%s) volume %d" % (eid, b["clip"], vol))
        self._report(b, eid, "start", "started")

    def _feed(self, now):
        p = self.play
        due = min(p[7], time.ticks_diff(now, p[5]) * p[4] // 1000 + CHUNK)  # a chunk ahead
        for _ in range(8):
            if p[6] >= due:
                break
            data = p[2].read(min(CHUNK, due - p[6]))
            if not data:
                self._end("failed", "clip cut short")
                return
            p[3].write(data)
            p[6] += len(data)
        if p[6] >= p[7] and time.ticks_diff(now, p[5]) * p[4] // 1000 >= p[7]:
            self._end("completed")

    def _end(self, status, reason=None):
        p = self.play
        self.play = None
        p[2].close()
        p[3].close()
        self._report(p[0], p[1], "end", status, reason)
        self._amp_off = time.ticks_add(time.ticks_ms(), AMP_OFF_MS)
        if self.queue:
            b, eid = self.queue.pop(0)
            self._start(b, eid)

    def figures(self):
        return {"played": self.played, "failed": self.failed, "queue": len(self.queue)}

    def stop(self):
        if self.play:
            self._end("failed", "stopped")
        self.hal.out("amp", 0)
