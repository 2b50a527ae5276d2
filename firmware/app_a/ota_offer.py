# An offer (ioc/v1/d/{id}/ota/offer) taken from ota_offer.json in the update boot (ota_boot.py):
# answered again if its id was handled, refused if malformed, a rollback carried out, or an
# install handed on to ota_check.py. The offer is
# read from flash member by member (ota_json.py): its metadata text goes to ota_meta.json, hashed
# on the way, and is read back one member at a time, so neither is ever whole in RAM.
import hashlib

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
    o["sha"] = sha
    return o  # to be checked (ota_check.py), once this module and ota_json.py left the heap


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
