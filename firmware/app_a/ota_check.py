# The checks of an install offer in the update boot (ota_boot.py), after ota_offer.py read it
# and left the heap: the signature over the metadata's digest, then the metadata itself read back
# from ota_meta.json one member at a time (ota_verify.py), its files written to ota_job.txt as
# they are checked (app.mpy last); then the device's checks. Returns the job for ota_fetch.py,
# or None when the offer was refused (reported and remembered).
import os

import ota
import ota_verify
from version import FW


def _text(x, most):
    return isinstance(x, str) and 0 < len(x) <= most


def check(dev, o):
    s = ota.load()
    oid, rel, sha = o["id"], o["release"], o["sha"]
    if o["meta"] > 8192:
        why = "bad_meta"
    else:
        why = ota_verify.signature(o["digest"], o.get("sigs"), ota_verify.trust_list())
    if why:
        return ota.failed(dev, s, oid, rel, why, "refused", sha)
    __import__("gc").collect()  # the signature check's big numbers leave holes behind
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
    return s["job"], head["files"], total[0]


