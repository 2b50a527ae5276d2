# Start-up: config.json, the HAL and the TLS trust, put together into a Device. Everything here
# runs once; app.py drops this module (as this drops config, hal/__init__ and trust) before the
# role is loaded, so their code leaves the heap and the role's code takes its place.
import gc
import os
import random
import sys

import config
import hal
from device import Device, log
from version import FW


def device(boot=None):
    """The Device (no roles yet), or exit 2 with one line for a bad config.json or ca.der."""
    try:
        cfg = config.load()
        ssl = None
        if cfg.insecure_plaintext:
            log("insecure_plaintext: MQTT without TLS (lab networks only)")
        else:
            # made once for the device's life: a reconnect neither reads ca.der again nor
            # leaves a hole of the context's size (3 KB on the unix port) in the heap
            ssl = __import__("trust").context()
    except config.ConfigError as e:  # also trust's: ca.der missing or damaged
        print("fw: config error:", e)
        sys.exit(2)
    seed = os.urandom(4)
    random.seed(seed[0] | seed[1] << 8 | seed[2] << 16 | (seed[3] & 0x3F) << 24)
    dev = Device(hal.load(cfg), cfg, boot, ssl, config.RANGES["health_period_s"])
    for name in ("config", "hal", "trust"):
        sys.modules.pop(name, None)
    log("fw %s device %s boot %d reset %s" % (FW, cfg.device_id, dev.counters.boots,
                                             dev.reset_cause))
    if boot is not None:
        dev.judge_ms = cfg.boot_good_s * 1000  # when this boot is judged (device.py)
        if dev.safe_mode or "back" in boot.state:  # in safe mode or just out of it
            __import__("safe_mode").start(dev)
            del sys.modules["safe_mode"]
        if "trial" in boot.state:  # a new version on trial, or back from one (ota.py)
            gc.collect()  # the modules dropped above leave the heap first: ota.py's import needs room
            __import__("ota_trial").boot(dev)
    return dev
