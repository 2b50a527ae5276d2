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
        # name -> GPIO number: lamp (PWM), current_ma (ADC, with current_uv_per_ma), amp (relay),
        # volume (PWM to the amplifier's gain input), th (DHT22 data), i2s_sck/i2s_ws/i2s_sd
        self.pins = getattr(cfg, "pins", {})
        self.uv_per_ma = getattr(cfg, "current_uv_per_ma", 1000)
        self._io = {}
        self._wdt = None

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

    def set_time(self, unix_ms):
        s = (unix_ms - _EPOCH_MS) // 1000
        t = time.gmtime(s)
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))

    def ntp_sync(self, host):
        try:
            import ntptime
            ntptime.host = host
            ntptime.settime()
            return True
        except (OSError, OverflowError, IndexError):
            return False

    def wdt_start(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        self._wdt.feed()

    def _pin(self, name):
        return machine.Pin(self.pins[name])

    def out(self, name, value):
        # lamp: duty 0..1000 (PWM 1 kHz); volume: 0..100 (PWM); amp and others: a relay 0/1
        io = self._io.get(name)
        if io is None:
            if name in ("lamp", "volume"):
                io = machine.PWM(self._pin(name), freq=1000, duty_u16=0)
            else:
                io = machine.Pin(self.pins[name], machine.Pin.OUT)
            self._io[name] = io
        if name == "lamp":
            io.duty_u16(value * 65535 // 1000)
        elif name == "volume":
            io.duty_u16(value * 65535 // 100)
        else:
            io.value(1 if value else 0)

    def adc(self, name):
        # mA through the lamp, from a current transformer's rectified voltage
        io = self._io.get(name)
        if io is None:
            io = self._io[name] = machine.ADC(self._pin(name), atten=machine.ADC.ATTN_11DB)
        return io.read_uv() // self.uv_per_ma

    def th_read(self):
        import dht
        io = self._io.get("th")
        if io is None:
            io = self._io["th"] = dht.DHT22(self._pin("th"))
        try:
            io.measure()
            return io.temperature(), io.humidity()
        except OSError:
            return None

    def uart(self, port, baud):
        # port: the UART number (2 on most boards); rx pin from pins["uart_rx"]
        u = machine.UART(int(port), baudrate=baud, rx=self.pins.get("uart_rx", 16), timeout=0)
        return u  # read() returns the waiting bytes or None, as the host's does

    def audio(self, rate, bits, channels):
        p = self.pins
        return machine.I2S(0, sck=machine.Pin(p["i2s_sck"]), ws=machine.Pin(p["i2s_ws"]),
                           sd=machine.Pin(p["i2s_sd"]), mode=machine.I2S.TX, bits=bits,
                           format=machine.I2S.MONO if channels == 1 else machine.I2S.STEREO,
                           rate=rate, ibuf=8192)

    def heap_max_block(self):
        # Largest free block of the IDF data heap, which MicroPython's heap grows into.
        try:
            return max(h[2] for h in esp32.idf_heap_info(esp32.HEAP_DATA))
        except (AttributeError, ValueError):
            return None

    def sleep_ms(self, ms):
        time.sleep_ms(ms)
