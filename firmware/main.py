# Boot stage. Picks the app slot (app_a/ or app_b/), counts boots that never became healthy,
# and falls back to the other slot after MAX_TRIES of them. An update replaces a slot, never
# this file: keep it tiny and stable. File format of bootstate.json: {"active": "a"|"b",
# "tries": n, "failed": m}: tries of the active slot, and failed boots of all slots since the
# last healthy one; the app clears both through Boot.mark_good() once it has run healthy.
# Once both slots had MAX_TRIES (failed reached 2 x MAX_TRIES), the boot stage stops switching:
# it stays on the active slot, whose tries then pass MAX_TRIES, and the app runs in safe mode.
import json
import os
import sys

STATE = "bootstate.json"
MAX_TRIES = 3
EXIT_CRASH = 70  # host only: the app raised; an ESP32 resets instead


def _read():
    try:
        with open(STATE) as f:
            s = json.load(f)
        if s.get("active") in ("a", "b") and isinstance(s.get("tries"), int):
            return s
    except (OSError, ValueError):
        pass
    return {"active": "a", "tries": 0}


def _write(s):
    with open(STATE + ".tmp", "w") as f:
        json.dump(s, f)
    try:
        os.rename(STATE + ".tmp", STATE)
    except OSError:  # FAT will not rename over a file; LittleFS does
        os.remove(STATE)
        os.rename(STATE + ".tmp", STATE)


def _valid(slot):
    for name in ("app.py", "app.mpy"):
        try:
            os.stat("app_" + slot + "/" + name)
            return True
        except OSError:
            pass
    return False


class Boot:
    def __init__(self):
        s = _read()
        failed = s.get("failed", s["tries"])
        if not isinstance(failed, int):
            failed = s["tries"]
        self.switched_from = None
        usable = _valid(s["active"])
        if not usable or s["tries"] >= MAX_TRIES and failed < 2 * MAX_TRIES:
            other = "b" if s["active"] == "a" else "a"
            if _valid(other):
                self.switched_from = s["active"]
                s = {"active": other, "tries": 0}
        s["tries"] += 1
        s["failed"] = failed + 1
        _write(s)
        self.slot = s["active"]
        self.tries = s["tries"]
        self.failed = s["failed"]

    def mark_good(self):
        _write({"active": self.slot, "tries": 0, "failed": 0})


def _run():
    boot = Boot()
    if boot.switched_from:
        print("boot: leaving slot", boot.switched_from, "(failed boots or no app) for", boot.slot)
    print("boot: slot", boot.slot, "try", boot.tries)
    sys.path.insert(0, "app_" + boot.slot)
    try:
        import app
        app.main(boot)
    except Exception as e:  # SystemExit and KeyboardInterrupt are not Exceptions: they pass
        sys.print_exception(e)
        if sys.platform != "esp32":
            sys.exit(EXIT_CRASH)
        import machine
        import time
        time.sleep(5)
        machine.reset()


_run()
