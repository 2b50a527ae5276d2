# The host HAL for the MicroPython unix port: a board whose filesystem is the current folder.
# Wifi is always up with a configured RSSI; a reset exits with EXIT_REBOOT so whoever started
# the process restarts it, and the next start reports the reset cause "soft".
#
# The board's pins are files in io/ (the lowest boundary there is without hardware):
#   io/<name>        outputs the firmware writes (lamp duty, amplifier relay, volume), one number
#   io/<name>        inputs a test writes (current_ma, th = "temp_c rh"), read when sampled
#   io/audio.out     the audio sink: clip samples are appended as they are played
# A UART is a real serial device path (a pty in the tests).
# clock.json sets the board's clock: {"unix_ms": T, "real_ms": R, "rate": k} means "at host
# time R it was T, and it runs k times as fast"; {"unix_ms": null} means "not set yet" (as an
# ESP32 after power-on without NTP). Without the file the clock is the host's.
# The watchdog is a separate process (a shell loop), as independent of the interpreter as the
# ESP32's hardware timer: feeding touches .wdt_fed; when its age passes the timeout, the watcher
# marks a watchdog reset and kills the interpreter (SIGKILL: no clean-up, like a reset). Not a
# thread: the unix port's threads run without a GIL and a collection in one disturbs
# allocations in the other. A file .hang makes the loop's next feed hang forever (fault injection).
import json
import os
import sys
import time

EXIT_REBOOT = 3
SOFT_RESET_MARK = ".soft_reset"
WDT_RESET_MARK = ".wdt_reset"
WDT_FED = ".wdt_fed"
WDT_TOUCH_MS = 500  # feeding touches the file at most this often
# $PPID of the shell that os.system() starts is the interpreter; the watcher ends with it.
WDT_WATCHER = ("(p=$PPID; while kill -0 $p 2>/dev/null; do sleep 0.5; "
               "a=$(( $(date +%%s) - $(stat -c %%Y " + WDT_FED + ") )); "
               "if [ $a -gt %d ]; then echo 1 > " + WDT_RESET_MARK + "; "
               "echo 'hal: watchdog reset'; kill -9 $p; exit; fi; done) &")
CLOCK_FILE = "clock.json"
CLOCK_POLL_MS = 500
IO = "io/"


def _host_ms():
    return time.time_ns() // 1000000


class Hal:
    hw = "micropython unix port"

    def __init__(self, cfg):
        self._rssi = getattr(cfg, "host_rssi", -60)
        self._clock_raw = None
        self._clock = None  # (unix_ms, real_ms, rate), or None: clock unknown
        self._clock_at = None
        self._fed = 0
        self._wdt_ms = 0
        try:
            os.mkdir("io")
        except OSError:
            pass

    def wifi_start(self):
        pass

    def wifi_up(self):
        return True

    def rssi(self):
        return self._rssi

    def reset_cause(self):
        for mark, cause in ((WDT_RESET_MARK, "watchdog"), (SOFT_RESET_MARK, "soft")):
            try:
                os.remove(mark)
                return cause
            except OSError:
                pass
        return "power_on"

    def reset(self):
        with open(SOFT_RESET_MARK, "w") as f:
            f.write("1")
        sys.exit(EXIT_REBOOT)

    # -- clock ----------------------------------------------------------------------------------

    def _read_clock(self):
        now = time.ticks_ms()
        if self._clock_at is not None and time.ticks_diff(now, self._clock_at) < CLOCK_POLL_MS:
            return
        self._clock_at = now
        try:
            with open(CLOCK_FILE) as f:
                raw = f.read()
        except OSError:
            raw = ""
        if raw == self._clock_raw:
            return
        self._clock_raw = raw  # a changed file overrides an earlier set_time()
        if not raw:
            self._clock = (0, 0, 1)
            return
        try:
            c = json.loads(raw)
            t = c["unix_ms"]
            self._clock = None if t is None else (t, c.get("real_ms", _host_ms()), c.get("rate", 1))
        except (ValueError, KeyError, TypeError):
            self._clock = None

    def now_ms(self):
        self._read_clock()
        c = self._clock
        if c is None:
            return None
        return c[0] + (_host_ms() - c[1]) * c[2]

    def set_time(self, unix_ms):
        self._read_clock()
        self._clock = (unix_ms, _host_ms(), 1)

    def ntp_sync(self, host):
        return False  # no NTP server on the test host: the fleet's set_time is the source here

    def heap_max_block(self):
        # The unix port does not expose its heap map: find the largest allocation that succeeds.
        import gc
        gc.collect()
        lo, hi = 0, gc.mem_free()
        while hi - lo > 64:
            mid = (lo + hi) // 2
            try:
                b = bytearray(mid)
                del b
                lo = mid
            except MemoryError:
                hi = mid
        return lo

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    # -- watchdog -------------------------------------------------------------------------------

    def wdt_start(self, timeout_ms):
        self._wdt_ms = timeout_ms
        self._touch()
        os.system(WDT_WATCHER % max(1, timeout_ms // 1000))

    def _touch(self):
        self._fed = time.ticks_ms()
        with open(WDT_FED, "w"):
            pass

    def wdt_feed(self):
        try:
            os.stat(".hang")
        except OSError:
            if self._wdt_ms and time.ticks_diff(time.ticks_ms(), self._fed) >= WDT_TOUCH_MS:
                self._touch()
            return
        print("hal: main loop hangs (.hang)")
        while True:
            time.sleep_ms(1000)

    # -- pins -----------------------------------------------------------------------------------

    def out(self, name, value):
        # PWM duty (0..1000), a relay (0/1) or a volume (0..100): the value, as the pin would hold it
        with open(IO + name, "w") as f:
            f.write(str(value))

    def adc(self, name):
        try:
            with open(IO + name) as f:
                return int(f.read())
        except (OSError, ValueError):
            return 0

    def th_read(self):
        # (temp_c, rh) from io/th, or None while the sensor does not answer
        try:
            with open(IO + "th") as f:
                t, rh = f.read().split()
            return float(t), float(rh)
        except (OSError, ValueError):
            return None

    def uart(self, port, baud):
        from hal.host_uart import HostUart  # only the sensor role needs it
        return HostUart(port)

    def audio(self, rate, bits, channels):
        return open(IO + "audio.out", "ab")
