# The ESP32 HAL on the host, with the three board-only modules (machine, network, esp32)
# replaced by recorders: the lowest boundary there is without a board.
#   micropython mp_esp32_hal.py <slot folder>
# ruff: noqa: E402  -- the stand-ins must be in sys.modules before the HAL is imported
import sys
import time

sys.path.insert(0, sys.argv[1])


class Machine:
    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
    cause = 1
    resets = 0

    @classmethod
    def reset_cause(cls):
        return cls.cause

    @classmethod
    def reset(cls):
        cls.resets += 1


class WLAN:
    def __init__(self, interface):
        self.interface = interface
        self.on = False
        self.state = 1000  # STAT_IDLE
        self.calls = []

    def active(self, on=None):
        if on is None:
            return self.on
        self.on = on
        self.calls.append("active")

    def isconnected(self):
        return self.state == 1010

    def status(self, param=None):
        if param == "rssi":
            return -71
        return self.state

    def connect(self, ssid, password):
        self.calls.append(("connect", ssid, password))
        self.state = 1001


class Network:
    STA_IF = 0
    STAT_CONNECTING = 1001
    WLAN = WLAN


class Esp32:
    HEAP_DATA = 4

    @staticmethod
    def idf_heap_info(kind):
        assert kind == 4
        return [(240, 100, 60, 50), (7000, 5000, 4096, 4000)]


class Clock:
    # time as an ESP32 sees it before NTP: the RTC still at its 2000 epoch
    @staticmethod
    def gmtime(t=0):
        return (2000, 1, 1, 0, 0, 0, 5, 1)

    time_ns = time.time_ns
    sleep_ms = time.sleep_ms


class Config:
    wifi_ssid = "ioc-street"
    wifi_password = "secret"


sys.modules["machine"] = Machine
sys.modules["network"] = Network
sys.modules["esp32"] = Esp32
from hal import esp32 as hal_esp32


def expect(actual, wanted):
    assert actual == wanted, f"\n got    {actual!r}\n wanted {wanted!r}"


hal = hal_esp32.Hal(Config())
CAUSES = ((1, "power_on"), (2, "hard"), (3, "watchdog"), (4, "deepsleep"), (5, "soft"), (9, "unknown"))
for cause, name in CAUSES:
    Machine.cause = cause
    expect(hal.reset_cause(), name)
print("ok reset_cause")

expect(hal.rssi(), None)
hal.wifi_start()
hal.wifi_start()  # already connecting: no second connect
expect(hal.wlan.calls, ["active", ("connect", "ioc-street", "secret")])
expect(hal.wifi_up(), False)
hal.wlan.state = 1010
expect((hal.wifi_up(), hal.rssi()), (True, -71))
print("ok wifi")

expect(hal.heap_max_block(), 4096)
assert isinstance(hal.hw, str) and hal.hw
hal.reset()
expect(Machine.resets, 1)
print("ok board")

ms = hal.now_ms()  # the host's clock is set: Unix milliseconds, an integer
assert isinstance(ms, int) and abs(ms - time.time_ns() // 1000000) < 60000, ms
del sys.modules["hal.esp32"]
sys.modules["time"] = Clock
import hal.esp32  # loaded again, now on a clock that was never set

unset_clock = sys.modules["hal.esp32"]

expect(unset_clock.Hal(Config()).now_ms(), None)
expect(unset_clock._EPOCH_MS, 946684800000)
print("ok clock")
