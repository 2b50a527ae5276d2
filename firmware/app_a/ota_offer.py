# An offer (ioc/v1/d/{id}/ota/offer) taken from ota_offer.json in the update boot (ota_boot.py):
# answered again if its id was handled, refused with a reason, a rollback carried out, or an
# install checked (ota_verify.py) and handed to ota_fetch.py. The offer is
# read from flash member by member (ota_json.py): its metadata text goes to ota_meta.json, hashed
# on the way, and is read back one member at a time, so neither is ever whole in RAM.
import hashlib
import os

import ota
import ota_json
from version import FW

_FIELDS = ("v", "id", "release", "action", "url", "exp")


def _text(x, most):
    return isinstance(x, str) and 0 < len(x) <= most


def _read(dev):
    # The offer's small members (a dict; "meta": its length in bytes, "digest": its SHA-256),
    # or None when it is not a JSON object.
    o = {}
    h = hashlib.sha256()
    try:
        with open(ota.OFFER, "rb") as f, open(ota.META, "wb") as m:
            r = ota_json.Reader(f)
            for k in r.members():
                b = r.ws()
                if k == "meta":
                    if b != 0x22:
                        raise ValueError("meta is text")
                    n = [0]

                    def sink(data, n=n):
                        n[0] += len(data)
                        if n[0] <= 8192:
                            h.update(data)
                            m.write(data)
                    r.string(sink)
                    o["meta"] = n[0]
                elif k == "sigs":
                    o[k] = r.value(b, 4 * 600)
                elif k in _FIELDS:
                    o[k] = r.value(b, 600)
                else:  # deltas (Pi only), or a member a later fleet adds
                    r.raw(b, 0, False)
            r.end()
    except (OSError, ValueError) as e:
        dev.log("ota: offer not readable: %r" % e)
        return None
    o["digest"] = h.digest()
    return o


def take(dev):
    sha = ota.digest(ota.OFFER)
    o = _read(dev) or {}
    ota.remove(ota.OFFER)
    s = ota.load()
    oid = o.get("id")
    rel = o.get("release")
    if not _text(rel, 64):
        rel = "unknown"
    if not _text(oid, 64):
        oid = None
    dev.offer = (oid or sha, rel, sha)
    if (oid is None or rel == "unknown" or o.get("v") != 1
            or o.get("action") not in ("install", "rollback")):
        return ota.failed(dev, s, oid or sha, rel, "bad_offer", "malformed offer", sha)
    for e in s["recent"]:
        if e[0] == oid and e[2] in ota.FINAL:  # handled before: the same answer (a new token)
            ota.record(s, oid, e[1], e[2], e[3], sha)
            return ota.progress(dev, e[1], e[2], None, e[3])
    if o["action"] == "rollback":
        return _rollback(dev, s, oid, rel, sha)
    if "meta" not in o:
        return ota.failed(dev, s, oid, rel, "bad_offer", "no metadata", sha)
    import ota_verify

    if o["meta"] > 8192:
        why = "bad_meta"
    else:
        why = ota_verify.signature(o["digest"], o.get("sigs"), ota_verify.trust_list())
    if why:
        return ota.failed(dev, s, oid, rel, why, "refused", sha)
    # The files go to ota_job.txt as they are checked, app.mpy last whatever the order.
    app = []
    total = [0]
    with open(ota.JOB, "w") as job:
        def on_file(path, sha, size):
            total[0] += size
            if path == "app.mpy":
                app.append("app.mpy %d %s\n" % (size, sha))
            else:
                job.write("%s %d %s\n" % (path, size, sha))
        with open(ota.META, "rb") as f:
            why, head = ota_verify.meta_verdict(f, on_file)
        if app:
            job.write(app[0])
    ota.remove(ota.META)
    if not why:
        now = dev.hal.now_ms()
        why = ota_verify.check_device(head, FW, s["floor"], getattr(dev.cfg, "class"),
                                      None if now is None else now // 1000)
    if why == "same_version":
        ota.remove(ota.JOB)
        d = {"reason": why, "msg": "running " + FW}
        ota.record(s, oid, rel, "confirmed", d, sha)
        return ota.progress(dev, rel, "confirmed", None, d)
    if why:  # no_clock too: the running firmware takes it again once its clock is set (ota.py)
        ota.remove(ota.JOB)
        return ota.failed(dev, s, oid, rel, why, "refused", sha)
    url = o.get("url")
    if not (_text(url, 512) and "{sha256}" in url
            and (url.startswith("http://") or url.startswith("https://") and dev.link.ssl)):
        ota.remove(ota.JOB)
        return ota.failed(dev, s, oid, rel, "bad_offer", "bad url", sha)
    if "keys" in head:
        ota.store.write_json(ota.KEYS_NEXT, {"keys": head["keys"]})
    try:
        v = os.statvfs(".")  # the board's root: "/" on an ESP32, the board folder on the host
        if v[0] * v[4] < total[0]:
            ota.remove(ota.JOB)
            return ota.failed(dev, s, oid, rel, "no_space", "%d bytes needed" % total[0], sha)
    except (OSError, AttributeError):
        pass
    s["job"] = {"id": oid, "release": rel, "url": url, "version": head["version"],
                "floor": head["floor"], "keys": 1 if "keys" in head else 0, "sha": sha}
    ota.record(s, oid, rel, "received", None, sha)
    ota.progress(dev, rel, "received")
    return s["job"], head["files"], total[0]  # ota_boot.py makes the Job (ota_fetch.py)


def _rollback(dev, s, oid, rel, sha):
    # Back to the version kept in the other slot, if it is whole and not below the floor.
    slot = ota.other(dev.boot.state["active"])
    v = s["slots"].get(slot)
    if not v or ota.size("app_%s/app.mpy" % slot) < 0 and ota.size("app_%s/app.py" % slot) < 0:
        return ota.failed(dev, s, oid, rel, "no_previous", "no version kept beside " + FW, sha)
    if ota.version(v) < ota.version(s["floor"]):
        return ota.failed(dev, s, oid, rel, "downgrade", "%s is below the floor %s" % (v, s["floor"]),
                          sha)
    s["slots"][dev.boot.state["active"]] = FW
    d = {"reason": "command", "msg": "from %s to %s" % (FW, v)}
    ota.record(s, oid, rel, "rolled_back", d, sha)
    ota.progress(dev, rel, "rolled_back", None, d)
    dev.boot.end(active=slot, tries=0)
    dev.reboot_requested = True
    return None
