# The ESP32's release verifier (firmware/app_a/ota_verify.py) under the real MicroPython:
#   micropython -X heapsize=64k mp_ota_verify.py <slot folder> <cases file>
# The cases file holds one JSON document a line: first {"trusts": {name: trust list}}, then the
# cases of contract/vectors/release/vectors.json ("verify" and "device"). Prints, per case,
# "case <name> <answer>", then "measure <us> <bytes>": the time and the bytes allocated (the
# collector off, so an upper bound of the heap it needs) of one signature check of the first case.
import gc
import json
import sys
import time

sys.path.insert(0, sys.argv[1])
import ota_verify

with open(sys.argv[2]) as f:
    trusts = json.loads(f.readline())["trusts"]
    first = None
    while True:
        line = f.readline()
        if not line:
            break
        case = json.loads(line)
        del line
        keys = trusts[case["trust"]]["keys"]
        if "device" in case:
            d = case["device"]
            why, head = ota_verify.check(case["meta"], case["sigs"], keys, d["running"], d["floor"],
                                         d["class"], d["now"], d["kind"])
        else:
            why, head = ota_verify.verify(case["meta"], case["sigs"], keys)
        print("case", case["name"], why or "ok")
        if first is None:
            first = case
        del case, head
        gc.collect()

keys = trusts[first["trust"]]["keys"]
meta, sigs = first["meta"], first["sigs"]
del first, trusts
gc.collect()
gc.disable()
before = gc.mem_alloc()
t = time.ticks_us()
why = ota_verify.signature(meta, sigs, keys)
us = time.ticks_diff(time.ticks_us(), t)
used = gc.mem_alloc() - before
gc.enable()
assert why is None, why
print("measure", us, used)
