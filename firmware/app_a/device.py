# The device: config, HAL, the link to the broker and the main loop.
import gc
import time

from micropython import const

import contract
import store
from commands import Commands
from desired import Desired
from link import Link
from outbox import Outbox
from version import FW

_TICK_MS = const(200)  # longest idle wait of the loop: commands wake it at once, timers within a tick
_FLUSH_PER_TICK = const(8)  # buffered messages sent per loop turn, so a backlog cannot stall the loop
_REBOOT_GRACE_MS = const(5000)  # how long a requested reboot waits for its answer to be sent
_MAX_SHORT_TURNS = const(3)  # loop turns in a row that may run out of heap before the app gives up
_SAFE_AFTER_TRIES = const(3)  # failed boots before the next one runs in safe mode (1 on a retry after it)
_DESIRED_RETRY_MS = const(5000)  # a desired-state document dropped for want of heap is asked for again this often
_NTP_RETRY_MS = const(30000)  # while the clock is unknown: ask NTP this often (the fleet's set_time too)
_NTP_PERIOD_MS = const(6 * 3600 * 1000)  # once known: resynchronise this often (an RTC drifts)


def log(msg):
    print("fw:", msg)


class Meter:
    # Uptime that survives the ticks wrap, the slowest loop turn of a health period, and heap.
    def __init__(self):
        self.up_ms = 0
        self._last = time.ticks_ms()
        self.loop_max = 0
        self.heap_min = gc.mem_free()
        self.peak_turn = 0  # most heap in use at the end of a loop turn, before collection
        self.peak_live = 0  # most heap in use after collection

    def tick(self, now):
        self.up_ms += time.ticks_diff(now, self._last)
        self._last = now

    def turn(self, ms):
        if ms > self.loop_max:
            self.loop_max = ms
        self.peak_turn = max(self.peak_turn, gc.mem_alloc())
        gc.collect()
        self.peak_live = max(self.peak_live, gc.mem_alloc())
        self.heap_min = min(self.heap_min, gc.mem_free())

    def take_loop_max(self):
        ms = self.loop_max
        self.loop_max = 0
        return ms


class Device:
    # Made by start.py, which also loads the roles: start-up code stays out of this module, whose
    # code is resident as long as the board runs. period_range: health_period_s's (lo, hi).
    def __init__(self, board, cfg, boot, ssl, period_range):
        self.hal = board
        self.cfg = cfg
        self.boot = boot
        self.log = log
        self.counters = store.Counters()
        self.stream = contract.Stream(self.counters.on_boot())
        self.reset_cause = board.reset_cause()
        self.outbox = Outbox(cfg.buffer_max)
        self.meter = Meter()
        self.period_s = cfg.health_period_s
        self._period_range = period_range
        self._next_health = time.ticks_ms()
        self.reboot_requested = False
        self._desired_missed = False  # a document arrived while the heap was short: ask again
        self._desired_retry_at = 0
        self._reboot_at = None
        # Safe mode: the boot stage counted too many failed boots (and had no other slot to fall
        # back to); after a retry (bootstate "back": retries so far) one failed boot is enough.
        # Only the network, commands and updates run: no roles. docs/firmware.md, Boot stage.
        self.safe_mode = boot is not None and boot.state["tries"] >= (
            1 if boot.state.get("back") else _SAFE_AFTER_TRIES)
        self.judge_ms = 0  # uptime of the boot's judgement (safe mode: of the retry; start.py)
        self.commands = Commands(self)
        self.desired = Desired(self)
        self._next_ntp = time.ticks_ms()
        self.roles = []  # loaded by start.py, once start-up code has left the heap
        # Updates (ota.py, loaded only while needed): an offer waiting in ota_offer.json (or one
        # refused for want of a clock, looked at again once it is set), and the trial: the uptime
        # by which a new version must pass its health gate (0: not on trial).
        self.ota_offer = False
        self.offer_again = False
        self.trial_ms = 0
        self.health_acked = False  # a health message of this boot was acknowledged (PUBACK)
        self.link = Link(board, cfg, self.counters, self.on_message, log, ssl, self.on_big)
        self._prefix_len = len(contract.topic(cfg.device_id, ""))

    # -- what the rest of the firmware calls ----------------------------------------------------

    def emit(self, suffix, body):
        # Stamp now, in the current stream, and buffer; the loop sends when the link is up.
        self.stream.stamp(body, self.hal.now_ms())
        self.outbox.put((suffix, contract.encode(body)))

    def telemetry(self, role, readings):
        body = contract.telemetry(role, readings)
        if body is not None:  # None: no finite reading to send
            self.emit("telemetry", body)

    def event(self, eid, etype, phase, data, category="other"):
        self.emit("event", contract.event(eid, etype, phase, category, data))

    def feed(self):
        # Only a loop that gets round (or a long job that makes progress) keeps the board alive.
        self.hal.wdt_feed()

    def set_time(self, unix_ms):
        before = self.hal.now_ms()
        self.hal.set_time(unix_ms)
        log("clock set to %d (was %s)" % (unix_ms, before))
        self._next_ntp = time.ticks_add(time.ticks_ms(), _NTP_PERIOD_MS)
        return None if before is None else unix_ms - before

    def check_health_period(self, period):
        lo, hi = self._period_range
        if not isinstance(period, int) or isinstance(period, bool) or not lo <= period <= hi:
            return "must be an integer in %d..%d" % (lo, hi)
        return None

    def set_health_period(self, period):
        error = self.check_health_period(period)
        if error:
            return error
        if period != self.period_s:
            self.period_s = period
            self._next_health = time.ticks_add(time.ticks_ms(), period * 1000)
        return None

    def on_message(self, topic, payload):
        # Called from inside the MQTT client: it only changes state and buffers answers, never
        # publishes, so the client is not re-entered.
        suffix = topic[self._prefix_len:]
        gc.collect()  # handling allocates the most of anything in a turn; take back the turn's garbage first
        try:
            if suffix == "cmd":
                self.commands.handle(payload)
            elif suffix == "state/desired":
                self.desired.offer(payload)
            elif suffix == "ota/offer" and len(payload):  # empty: the offer was cleared
                with self.on_big(topic) as f:  # a short offer (rollback)
                    f.write(payload)
        except MemoryError:
            if suffix == "state/desired":  # retained: the broker sends it again on a new SUBSCRIBE
                self._desired_missed = True
                log("no heap for a %d-byte state/desired message; will ask again" % len(payload))
            else:
                log("no heap for a %d-byte %s message; dropped" % (len(payload), suffix))

    def on_big(self, topic):
        # A long message (mqtt.BIG) goes to flash as it arrives if it is an offer: one in RAM
        # would need a free block of its length (5 KB for today's slot); the loop looks at it
        # there (ota.py).
        if topic[self._prefix_len:] != "ota/offer":
            return None
        self.ota_offer = not self.trial_ms  # on trial: not looked at (ota_trial.py removes it)
        return open("ota_offer.json", "wb")

    # -- the loop -------------------------------------------------------------------------------

    def new_stream(self, ses):
        self.stream = contract.Stream(ses, self.stream)

    def birth(self, ses):
        body = contract.birth(ses, self.hal.now_ms(), FW, [r.name for r in self.roles],
                              self.counters.boots, self.reset_cause, self.period_s, self.hal.hw,
                              self.stream.prev)
        if self.safe_mode:
            body["mode"] = "safe"
        return body

    def health(self):
        m = self.meter
        m.heap_min = min(m.heap_min, gc.mem_free())
        body = contract.health(
            m.up_ms // 1000, FW, gc.mem_free(), m.heap_min, self.hal.heap_max_block(),
            self.hal.rssi() if self.hal.wifi_up() else None, self.reset_cause, len(self.outbox),
            self.outbox.dropped, self.link.reconnects, m.take_loop_max())
        if self.safe_mode:
            body["mode"] = "safe"
        figures = {}
        for role in self.roles:
            figures[role.name] = role.figures()
        if figures:
            body["roles"] = figures
        return body

    def run(self):
        self.desired.restore()
        try:
            for role in self.roles:  # a first look at the stored state, before any connection
                role.tick(time.ticks_ms())
        except MemoryError:
            log("out of heap at the first look; the loop tries again")
        gc.collect()
        self.hal.wdt_start(self.cfg.wdt_s * 1000)
        short = 0
        try:
            while True:
                try:
                    self._turn()
                    short = 0
                except MemoryError:
                    # A turn that ran out of heap is given up; the link goes too, as a packet may
                    # be half read. Out of heap turn after turn is a crash (the boot stage resets).
                    short += 1
                    if short > _MAX_SHORT_TURNS:
                        raise
                    log("out of heap; turn abandoned")
                    self.link.lost("out of heap")
                    gc.collect()
        except KeyboardInterrupt:
            log("stopping")
        self.shutdown()

    def _turn(self):
        now = time.ticks_ms()
        self.meter.tick(now)
        link = self.link
        # The clock before the broker: TLS checks the broker certificate's dates against it.
        if time.ticks_diff(now, self._next_ntp) >= 0 and self.hal.wifi_up():
            known = self.hal.now_ms() is not None
            if self.hal.ntp_sync(self.cfg.ntp_host):
                log("clock set by NTP")
                known = True
            self._next_ntp = time.ticks_add(now, _NTP_PERIOD_MS if known else _NTP_RETRY_MS)
        if link.due(now):
            link.try_connect(now, self.new_stream, self.birth)
        if time.ticks_diff(now, self._next_health) >= 0:
            self._next_health = time.ticks_add(now, self.period_s * 1000)
            gc.collect()
            body = self.health()
            self.emit("health", body)
            m = self.meter
            log("health ses=%d seq=%d link=%s queue=%d heap_free=%d heap_min=%d peak_live=%d"
                " peak_turn=%d heap_total=%d" % (
                    body["ses"], body["seq"], "up" if link.up else "down", body["queue"],
                    body["heap_free"], m.heap_min, m.peak_live, m.peak_turn,
                    gc.mem_free() + gc.mem_alloc()))
        for role in self.roles:
            role.tick(now)
        if self._desired_missed and link.up and time.ticks_diff(now, self._desired_retry_at) >= 0:
            self._desired_missed = False
            self._desired_retry_at = time.ticks_add(now, _DESIRED_RETRY_MS)
            gc.collect()
            log("asking again for state/desired")
            try:
                link.client.subscribe(link.topic("state/desired"), 1)
            except OSError as e:
                link.lost(e)
        if self.ota_offer or self.offer_again and self.hal.now_ms() is not None:
            __import__("ota").offered(self)  # answered, or taken in an update boot
        if link.up:
            self._flush()
        if self.reboot_requested:
            if self._reboot_at is None:
                self._reboot_at = time.ticks_add(now, _REBOOT_GRACE_MS)
            if not self.outbox or time.ticks_diff(now, self._reboot_at) >= 0:
                log("rebooting")
                self.shutdown()
                if self.boot is not None:
                    self.boot.end()  # asked for: not a failed boot
                self.hal.reset()
        self.meter.turn(time.ticks_diff(time.ticks_ms(), now))
        self.feed()
        if self.judge_ms and self.meter.up_ms >= self.judge_ms:
            # Once per boot, the watchdog just fed: the roles ran boot_good_s with no exception
            # escaping, broker or not. A new version on trial (ota.py) also needs its health gate:
            # connected, birth sent, a health message acknowledged; checked each turn until
            # ota_trial_s. In safe mode: the wait before the slot is tried again is over
            # (safe_mode.py).
            if self.safe_mode:
                self.judge_ms = 0
                __import__("safe_mode").leave(self)
            elif self.trial_ms:
                __import__("ota_trial").gate(self)
            else:
                self.judge_ms = 0
                self.boot.mark_good()
                log("boot marked good")
        t = time.ticks_ms()
        wait = min(_TICK_MS, max(0, time.ticks_diff(self._next_health, t)))
        for role in self.roles:  # a role due sooner (a broadcast's start) ends the wait at its time
            w = getattr(role, "wake", None)
            if w is not None:
                wait = min(wait, max(0, time.ticks_diff(w, t)))
        if link.up:
            try:
                link.client.check_msg(wait)
            except OSError as e:
                link.lost(e)
        else:
            self.hal.sleep_ms(min(wait, link.ms_to_next_try(time.ticks_ms())))

    def _flush(self):
        for _ in range(_FLUSH_PER_TICK):
            item = self.outbox.take()
            if item is None:
                return
            try:
                self.link.publish(item[0], item[1])
            except OSError as e:
                self.outbox.put_back(item)
                self.link.lost(e)
                return
            if item[0] == "health":
                self.health_acked = True  # publish() returned: the broker acknowledged it

    def shutdown(self):
        for role in self.roles:
            role.stop()
        if self.link.up:
            for _ in range(len(self.outbox)):
                if not self.link.up:
                    break
                self._flush()
        death = contract.death(self.link.ses or self.stream.ses, self.hal.now_ms(), "shutdown")
        self.link.close(contract.encode(death))

