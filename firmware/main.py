# Boot stage. Picks the app slot (app_a/ or app_b/), counts failed boots, and falls back to the
# other slot after MAX_TRIES of them. An update replaces a slot, never this file: keep it tiny
# and stable. bootstate.json: {"active": "a"|"b", "tries": n, "failed": m, "open": 1}: failed
# boots of the active slot, and of all slots since the last good boot; "open" while a boot runs
# unjudged. A boot is judged once: good (Boot.mark_good(), the app's call once its roles ran
# for a while) or failed (the app raised, or the board reset itself by its watchdog or a panic
# before the judgement). A boot cut short by a power cut or a restart the app asked for is not
# judged, so not counted: a power cut is no fault of the firmware. Other keys are the app's
# (Boot.state), kept until mark_good. Once both slots had MAX_TRIES (failed reached
# 2 x MAX_TRIES) the boot stage stops switching; the app then runs in safe mode.
import json
import os
import sys

STATE = "bootstate.json"
MAX_TRIES = 3
EXIT_CRASH = 70  # host only: the app raised; an ESP32 resets instead


def _write(s):
    try:
        with open(STATE + ".tmp", "w") as f:
            json.dump(s, f)
        try:
            os.rename(STATE + ".tmp", STATE)
        except OSError:  # FAT will not rename over a file; LittleFS does
            os.remove(STATE)
            os.rename(STATE + ".tmp", STATE)
    except OSError:  # a full or failing flash: the board runs on, uncounted
        pass


def _has(path):
    try:
        return os.stat(path)
    except OSError:
        return None


def _valid(slot):
    return _has("app_" + slot + "/app.mpy") or _has("app_" + slot + "/app.py")


class Boot:
    # state: this boot's bootstate.json ("tries" and "failed" count the boots before it).

    def mark_good(self):
        # The one place that commits a boot (and slot) as good: counts and the app's keys cleared.
        self.state = {"active": self.state["active"], "tries": 0, "failed": 0}
        _write(self.state)

    def end(self, failed=0, **keys):
        # This boot ends unjudged: failed (1: counted) or a restart the app asked for (0: not
        # counted). keys: fields for the next boot (the app's own, or tries for a new round).
        s = self.state
        if s.pop("open", 0):
            s["tries"] += failed
            s["failed"] += failed
            s.update(keys)
            _write(s)


def _run():
    # bootstate.json, or the .tmp of an interrupted write if whole (FAT: cut between remove and
    # rename); damaged, missing or not ours: slot a with nothing counted.
    for name in (STATE, STATE + ".tmp"):
        try:
            with open(name) as f:
                s = json.load(f)
            if s["active"] in ("a", "b") and 0 <= s["tries"] <= s.setdefault("failed", s["tries"]):
                break
        except Exception:
            pass
    else:
        s = {"active": "a", "tries": 0, "failed": 0}
    # The last boot, if left open, is judged now: failed if the board reset itself (its watchdog,
    # a panic), not counted if it lost its power.
    if s.pop("open", 0):
        if sys.platform == "esp32":
            import machine
            fault = machine.reset_cause() in (machine.WDT_RESET, machine.HARD_RESET)
        else:
            fault = _has(".wdt_reset")  # the host HAL's watchdog mark (app_a/hal/host.py)
        if fault:
            s["tries"] += 1
            s["failed"] += 1
    slot = s["active"]
    if not _valid(slot) or s["tries"] >= MAX_TRIES and s["failed"] < 2 * MAX_TRIES:
        other = "b" if slot == "a" else "a"
        if _valid(other):
            print("boot: leaving slot", slot, "(failed boots or no app) for", other)
            t = s.get("trial")  # a new version that failed its trial: the old slot reports it
            s = {"active": other, "tries": 0, "failed": s["failed"]}
            if t:
                s["trial"] = t
            slot = other
    s["open"] = 1
    _write(s)
    boot = Boot()
    boot.state = s
    print("boot: slot", slot, "try", s["tries"] + 1)
    sys.path.insert(0, "app_" + slot)
    try:
        import app
        app.main(boot)
    except Exception as e:  # SystemExit and KeyboardInterrupt are not Exceptions: they pass
        sys.print_exception(e)
        boot.end(1)
        if sys.platform != "esp32":
            sys.exit(EXIT_CRASH)
        import machine
        import time
        time.sleep(5)
        machine.reset()


_run()
