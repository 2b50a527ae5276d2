# The host HAL for the MicroPython unix port: a board whose filesystem is the current folder.
# Wifi is always up with a configured RSSI; a reset exits with EXIT_REBOOT so whoever started
# the process restarts it, and the next start reports the reset cause "soft".
import os
import sys
import time

EXIT_REBOOT = 3
SOFT_RESET_MARK = ".soft_reset"


class Hal:
    hw = "micropython unix port"

    def __init__(self, cfg):
        self._rssi = getattr(cfg, "host_rssi", -60)

    def wifi_start(self):
        pass

    def wifi_up(self):
        return True

    def rssi(self):
        return self._rssi

    def reset_cause(self):
        try:
            os.remove(SOFT_RESET_MARK)
            return "soft"
        except OSError:
            return "power_on"

    def reset(self):
        with open(SOFT_RESET_MARK, "w") as f:
            f.write("1")
        sys.exit(EXIT_REBOOT)

    def now_ms(self):
        return time.time_ns() // 1000000

    def heap_max_block(self):
        return None  # the unix port does not expose it

    def sleep_ms(self, ms):
        time.sleep_ms(ms)
