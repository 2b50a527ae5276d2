# The ESP32 HAL: machine, network.WLAN, esp32. Only imported on the board.
import esp32
import machine
import network
import sys
import time

_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft",
}
# Ports built with a 2000 epoch count from 2000-01-01; the contract counts from 1970.
_EPOCH_MS = 946684800000 if time.gmtime(0)[0] == 2000 else 0
_CLOCK_SET_YEAR = 2024  # the RTC starts at the epoch; a year before this means "never set"


class Hal:
    def __init__(self, cfg):
        self.ssid = cfg.wifi_ssid
        self.password = cfg.wifi_password
        self.wlan = network.WLAN(network.STA_IF)
        # e.g. "Generic ESP32 module with ESP32"
        self.hw = getattr(sys.implementation, "_machine", "ESP32")

    def wifi_start(self):
        if not self.ssid:
            return
        if not self.wlan.active():
            self.wlan.active(True)
        if self.wlan.isconnected() or self.wlan.status() == network.STAT_CONNECTING:
            return
        self.wlan.connect(self.ssid, self.password)

    def wifi_up(self):
        return self.wlan.isconnected()

    def rssi(self):
        if not self.wlan.isconnected():
            return None
        try:
            return self.wlan.status("rssi")
        except (OSError, ValueError):
            return None

    def reset_cause(self):
        return _CAUSES.get(machine.reset_cause(), "unknown")

    def reset(self):
        machine.reset()

    def now_ms(self):
        if time.gmtime()[0] < _CLOCK_SET_YEAR:
            return None
        return time.time_ns() // 1000000 + _EPOCH_MS

    def heap_max_block(self):
        # Largest free block of the IDF data heap, which MicroPython's heap grows into.
        try:
            return max(h[2] for h in esp32.idf_heap_info(esp32.HEAP_DATA))
        except (AttributeError, ValueError):
            return None

    def sleep_ms(self, ms):
        time.sleep_ms(ms)
