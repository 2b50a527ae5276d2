# Safe mode's event, wait and way out (docs/firmware.md, Boot stage). start.py calls start()
# once, on a boot in safe mode or just out of it, and drops this module; device.py imports it
# again only to leave safe mode, just before the board restarts. The app's keys in
# bootstate.json: "back" (times the device left safe mode by itself since the last good boot)
# and "ev" (the boot number of the safe-mode boot that left: the id of that episode's event).
from micropython import const

_DOUBLINGS = const(4)  # the wait doubles per retry, up to safe_retry_s x 16


def _wait_s(cfg, back):
    return cfg.safe_retry_s << min(back, _DOUBLINGS)


def start(dev):
    # The event of a boot in safe mode (and the uptime at which it leaves), or of the retry.
    s = dev.boot.state
    back = s.get("back", 0)
    if dev.safe_mode:
        wait = _wait_s(dev.cfg, back)
        dev.judge_ms = wait * 1000
        dev.log("safe mode: %d failed boots; roles off; slot tried again in %d s"
                % (s["failed"], wait))
        dev.event("safe_mode-%d" % dev.counters.boots, "safe_mode", "start",
                  {"failed": s["failed"], "retries": back, "retry_s": wait})
    elif not s["tries"]:  # the retry (a power cut before its judgement: sent again)
        dev.event("safe_mode-%d" % s.get("ev", 0), "safe_mode", "end",
                  {"reason": "stable", "retries": back, "after_s": _wait_s(dev.cfg, back - 1)})


def leave(dev):
    # Safe mode ran its wait without a failure: one more normal try of the slot. If that boot
    # fails, the next one is in safe mode again (device.py), and waits twice as long.
    dev.log("safe mode: no failure for %d s; trying the slot again" % (dev.meter.up_ms // 1000))
    dev.boot.end(tries=0, back=dev.boot.state.get("back", 0) + 1, ev=dev.counters.boots)
    dev.reboot_requested = True
