# The ESP32's release verifier (firmware/app_a/ota_verify.py) on the release vectors, under the
# real MicroPython:
#   micropython mp_release_vectors.py <slot folder> <cases file: one JSON case a line>
# A case line: {"name", "meta", "sigs", "keys", "device": {kind, class, running, floor, now}} or
# {"name", "trust": <ota_keys.json document>}. Prints "<name> <answer>" per case: the refusal code,
# "ok", or for a trust list "valid" / "invalid" (a device trusts nothing from a bad list).
import gc
import json
import sys

sys.path.insert(0, sys.argv[1])
import ota_verify

TRUST = sys.argv[2] + ".trust.json"  # beside the cases: a test's own folder
with open(sys.argv[2]) as cases:
    while True:
        line = cases.readline()
        if not line:
            break
        case = json.loads(line)
        line = None
        if "trust" in case:
            with open(TRUST, "w") as f:
                json.dump(case["trust"], f)
            keys = ota_verify.trust_list(TRUST)
            print(case["name"], "valid" if keys and keys == case["trust"]["keys"] else "invalid")
            continue
        d = case["device"]
        now = d["now"]
        why, _ = ota_verify.check(case["meta"], case["sigs"], case["keys"], d["running"], d["floor"], d["class"],
                                  None if now is None else now * 1000, d["kind"])
        print(case["name"], why or "ok")
        case = None
        gc.collect()
