# The trial of a new version (docs/firmware.md, "Updates"): start.py calls boot() on a boot whose
# bootstate.json holds a trial; device.py calls commit() when the trial passes its health gate and
# trial_failed() when ota_trial_s went by without. Loaded for the moment and dropped.
# bootstate.json "trial": {"from": the old slot, "id": the offer, "release", "floor": the
# release's floor, "keys": 1 if ota_keys.next holds the trust list it sets, "sha": the offer's
# digest, "why": "health" once it failed its health gate}.
import os
import sys

import ota
from version import FW


def _drop(dev):
    sys.modules.pop("ota_trial", None)
    ota.drop()


def boot(dev):
    st = dev.boot.state
    t = st["trial"]
    if t["from"] != st["active"]:
        dev.trial_ms = dev.cfg.ota_trial_s * 1000
        dev.log("ota: %s on trial: committed once connected and healthy, within %d s"
                % (t["release"], dev.cfg.ota_trial_s))
        return _drop(dev)
    # Back on the old slot: the new one crash-looped (the boot stage came back after MAX_TRIES)
    # or did not pass its health gate in time ("why": "health").
    why = t.get("why", "crash")
    s = ota.load()
    s["slots"][ota.other(st["active"])] = None  # no version to go back to
    d = {"reason": why, "msg": "the new version failed its trial; back on " + FW}
    ota.record(s, t["id"], t["release"], "rolled_back", d, t.get("sha"))
    ota.progress(dev, t["release"], "rolled_back", None, d)
    ota.remove(ota.KEYS_NEXT)
    del st["trial"]  # reported; bootstate.json drops it at this boot's next write
    _drop(dev)


def gate(dev):
    # device.py's call at each loop turn from boot_good_s on, while the boot is on trial: the
    # boot is committed (mark_good()) once the board is also connected (its birth sent) and a
    # health message of this boot was acknowledged; ota_trial_s without that: back to the old
    # slot. This module stays loaded until then.
    if dev.link.up and dev.health_acked:
        dev.judge_ms = 0
        commit(dev)
        dev.boot.mark_good()
        dev.log("boot marked good")
    elif dev.meter.up_ms >= dev.trial_ms:
        trial_failed(dev)


def commit(dev):
    # The trial passed its health gate; mark_good() follows. A power cut before that: the next
    # boot is on trial again and commits again (the same writes).
    t = dev.boot.state["trial"]
    s = ota.load()
    if t.get("keys"):
        try:
            os.rename(ota.KEYS_NEXT, ota.KEYS)
        except OSError:  # FAT will not rename over a file; or renamed before a power cut
            if ota.size(ota.KEYS_NEXT) >= 0:
                ota.remove(ota.KEYS)
                os.rename(ota.KEYS_NEXT, ota.KEYS)
    if ota.version(t["floor"]) > ota.version(s["floor"]):
        s["floor"] = t["floor"]
    s["slots"][dev.boot.state["active"]] = FW
    ota.record(s, t["id"], t["release"], "confirmed", None, t.get("sha"))
    ota.progress(dev, t["release"], "confirmed")
    ota.remove(ota.OFFER)  # one that came during the trial: it comes again at the next connect
    dev.trial_ms = 0
    _drop(dev)


def trial_failed(dev):
    # ota_trial_s went by without the health gate passing: back to the old slot, which reports it.
    t = dev.boot.state["trial"]
    t["why"] = "health"
    dev.log("ota: %s did not pass its health gate in %d s; back to slot %s"
            % (t["release"], dev.cfg.ota_trial_s, t["from"]))
    dev.boot.end(active=t["from"], tries=0, trial=t)
    ota.remove(ota.OFFER)
    dev.trial_ms = 0
    dev.judge_ms = 0
    dev.reboot_requested = True
    _drop(dev)
