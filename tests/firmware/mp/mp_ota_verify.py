# What one release check costs on the board (firmware/app_a/ota_verify.py), under the real
# MicroPython:  micropython -X heapsize=64k mp_ota_verify.py <slot folder> <case file>
# The case file: {"keys": trust list keys, "meta": text, "sigs": [...]} of a good release.
# Prints "signature <us> <bytes>" and "check <us> <bytes>": the time and the bytes allocated
# with the collector off (an upper bound of the heap each needs) of the signature check alone and
# of the whole check (signature, metadata, device).
import gc
import json
import sys
import time

sys.path.insert(0, sys.argv[1])
import ota_json  # noqa: F401 (loaded here: its code is not the check's heap)
import ota_verify

with open(sys.argv[2]) as f:
    case = json.load(f)
keys, meta, sigs = case["keys"], case["meta"], case["sigs"]
del case
for what in ("signature", "check"):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    t = time.ticks_us()
    if what == "signature":
        why = ota_verify.signature(__import__("hashlib").sha256(meta).digest(), sigs, keys)
    else:
        why = ota_verify.check(meta, sigs, keys, "0.1.0", None, "esp32", 1790000000000)[0]
    us = time.ticks_diff(time.ticks_us(), t)
    used = gc.mem_alloc() - before
    gc.enable()
    assert why is None, why
    print(what, us, used)
