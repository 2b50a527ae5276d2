# Hardware abstraction: everything the app needs from the board, in one small class per port.
#   wifi_start()            begin joining the network (idempotent, returns at once)
#   wifi_up() -> bool       has an address
#   rssi() -> int | None    signal strength in dBm
#   reset_cause() -> str    power_on, soft, hard, watchdog, deepsleep, unknown
#   reset()                 restart the board (never returns)
#   now_ms() -> int | None  Unix time in integer ms, None while the clock is unknown
#   heap_max_block() -> int | None
#   sleep_ms(ms)
#   hw                      free-text hardware description for the birth certificate
import sys


def load(cfg):
    if sys.platform == "esp32":
        from hal.esp32 import Hal
    else:
        from hal.host import Hal
    return Hal(cfg)
