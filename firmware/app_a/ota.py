# Over-the-air updates on the board (docs/ota.md, "The ESP32 path"; docs/firmware.md, "Updates").
# What the running firmware needs: offered() when an offer arrived (device.py wrote it to
# ota_offer.json), and what the update boot (ota_boot.py), its checks (ota_offer.py,
# ota_verify.py), its download (ota_fetch.py) and the trial (ota_trial.py) share: ota.json and the
# progress messages. Loaded for the moment and dropped.
# An offer that needs work is not handled by the running firmware, whose heap is its roles': the
# board restarts into an update boot (app.py runs ota_boot.py instead of the device), which
# checks it, downloads and installs, and restarts again.
# ota.json: {"floor": "x.y.z" (anti-rollback floor), "slots": {"a"|"b": version or null (the
# version a slot holds, null while it is being written or after it failed its trial)},
# "recent": [[offer id, release, status, detail, digest], ...] (the last RECENT offers, oldest
# first; digest: the first 16 hex digits of the offer's SHA-256), "job": the update at work
# {"id", "release", "url", "version", "floor", "keys": 0|1, "sha": digest}}.
import hashlib
import os
import sys

from micropython import const

import store

STATE = "ota.json"
OFFER = "ota_offer.json"  # the newest offer, as device.py received it
META = "ota_meta.json"  # the offered metadata text, taken out of the offer
JOB = "ota_job.txt"  # the files of the update at work: "path size sha256" a line, app.mpy last
KEYS = "ota_keys.json"
KEYS_NEXT = "ota_keys.next"  # the trust list of the release on trial, installed at its commit
RECENT = const(8)
FINAL = ("confirmed", "failed", "rolled_back", "rebooting")


def load():
    s = store.read_json(STATE)
    if not isinstance(s, dict):
        s = {}
    s.setdefault("floor", "0.0.0")
    s.setdefault("slots", {})
    s.setdefault("recent", [])
    return s


def save(s):
    store.write_json(STATE, s)


def record(s, oid, release, status, detail, sha):
    # The offer's latest status, kept so a redelivered offer is answered, not run again.
    r = s["recent"]
    for e in r:
        if e[0] == oid:
            r.remove(e)
            break
    r.append([oid, release, status, detail, sha])
    del r[:-RECENT]
    save(s)


def progress(dev, release, status, pct=None, detail=None):
    # ota/progress (docs/protocol.md): release, status, optional pct and detail; stamped by emit
    dev.log("ota: %s %s %s" % (release, status, "" if detail is None else detail))
    body = {"release": release, "status": status}
    if pct is not None:
        body["pct"] = pct
    if detail is not None:
        body["detail"] = detail
    dev.emit("ota/progress", body)


def failed(dev, s, oid, release, reason, msg, sha=None):
    # Refused or given up; remembered (when the offer has an id) so it is answered, not retried.
    d = {"reason": reason, "msg": msg}
    if oid is not None:
        record(s, oid, release, "failed", d, sha)
    progress(dev, release, "failed", None, d)


def other(slot):
    return "b" if slot == "a" else "a"


def size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def version(v):
    return tuple(int(x) for x in v.split("."))


def digest(path):
    h = hashlib.sha256()
    buf = bytearray(128)
    with open(path, "rb") as f:
        while True:
            k = f.readinto(buf)
            if not k:
                break
            h.update(memoryview(buf)[:k])
    return "".join("%02x" % b for b in h.digest()[:8])


def drop():
    sys.modules.pop("ota", None)


def offered(dev):
    # The running firmware's part: an offer answered before is answered again; one that needs
    # work restarts the board into the update boot (app.py), the offer waiting on flash.
    dev.ota_offer = False
    try:
        sha = digest(OFFER)
    except OSError:
        return drop()
    st = dev.boot.state if dev.boot is not None else {}
    t = st.get("trial")
    if t and t["from"] != st["active"]:  # a new version on trial: no other update meanwhile
        remove(OFFER)
        if t.get("sha") == sha:
            progress(dev, t["release"], "rebooting")
        return drop()
    for e in load()["recent"]:
        if e[4] == sha and e[2] in FINAL:
            if e[3] and e[3]["reason"] == "no_clock":
                dev.offer_again = dev.hal.now_ms() is None  # kept; looked at again once it is set
                if not dev.offer_again:
                    break  # the clock is set now: taken again
                progress(dev, e[1], e[2], None, e[3])
                return drop()
            remove(OFFER)
            progress(dev, e[1], e[2], None, e[3])
            return drop()
    if dev.boot is not None:
        dev.log("ota: an offer to take: restarting into the update boot")
        dev.reboot_requested = True
    drop()
