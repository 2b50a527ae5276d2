"""What signing and verifying a release costs (docs/ota.md, "Signatures and keys").

    .venv/bin/python benchmarks/release_verify.py [--runs N]

Builds the metadata of a real ESP32 release (the firmware slot compiled by `provision release
build`), signs it with a fresh RSA-3072 key, then times, each over N runs (median):
- CPython: signing (cryptography) and verifying (contract/release.py, pure Python);
- MicroPython unix port under -X heapsize=64k: firmware/app_a/ota_verify.check() (precompiled, as
  on a board) on the same metadata: time, mem_info's peak over the use before the call, and the
  smallest heap that runs it against the smallest that only loads the module and the case.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contract.release import TrustList, check_offer_for_device, verify_release  # noqa: E402
from provisioning.firmware_build import compile_slot  # noqa: E402
from provisioning.hostboard import MICROPYTHON  # noqa: E402
from provisioning.release import BuildRequest, build_release, keygen, load_signing_key, meta_text  # noqa: E402


def smallest_heap(script: Path) -> int:
    """The smallest -X heapsize (in steps of 512 B) under which `script` runs to its end."""
    low, high = 2048, 256 * 1024  # fails, works
    while high - low > 512:
        mid = (low + high) // 2 // 512 * 512
        done = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={mid}", str(script)], capture_output=True,
                              text=True, timeout=120)
        if done.returncode == 0 and "answer ok" in done.stdout:
            high = mid
        else:
            low = mid
    return high


MP_SCRIPT = """
import sys, gc, json, time, micropython
sys.path.insert(0, SLOT)
import ota_verify
with open(CASE + "/meta.txt") as f:
    meta = f.read()
with open(CASE + "/sigs.json") as f:
    sigs = json.load(f)
with open(CASE + "/keys.json") as f:
    keys = json.load(f)
gc.collect()
micropython.mem_info()
times = []
heap = 0
for i in range(RUNS):
    gc.collect()
    before = gc.mem_alloc()
    t = time.ticks_us()
    why, head = ota_verify.check(meta, sigs, keys, "0.1.0", None, "esp32", NOW_MS)
    times.append(time.ticks_diff(time.ticks_us(), t))
    head = None
    if i == 0:
        print("answer", why or "ok")
        micropython.mem_info()
        print("before", before)
times.sort()
print("median_us", times[len(times) // 2])
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pub, _ = keygen(tmp / "k.pem")
        key = load_signing_key(tmp / "k.pem")
        _, document = build_release(BuildRequest(kind="esp32", version="0.2.0", min_version="0.1.0",
                                                   out=tmp / "rel", signer=pub))
        text = meta_text(document)
        data = text.encode()
        sign_times, verify_times = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            sig = key.sign(data)
            sign_times.append(time.perf_counter() - started)
        trust = TrustList.of([key.public])
        for _ in range(args.runs):
            started = time.perf_counter()
            meta = verify_release(text, [sig], trust)
            verify_times.append(time.perf_counter() - started)
        check_offer_for_device(meta, "esp32", "esp32", "0.1.0", None, time.time())
        print(f"metadata: {len(document['files'])} files, {len(data)} bytes")
        print(f"CPython {sys.version.split()[0]}: sign {statistics.median(sign_times) * 1000:.2f} ms, "
              f"verify (signature + metadata) {statistics.median(verify_times) * 1000:.2f} ms "
              f"(median of {args.runs})")
        slot = ROOT / "firmware" / "app_a"
        if not (slot / "ota_verify.py").is_file():
            print("MicroPython: firmware/app_a/ota_verify.py is missing; not measured")
            return 0
        case = tmp / "case"
        case.mkdir()
        (case / "meta.txt").write_text(text)
        (case / "sigs.json").write_text(json.dumps([sig]))
        (case / "keys.json").write_text(json.dumps(trust.to_dict()["keys"]))
        script = tmp / "mp_bench.py"
        compiled = tmp / "slot"  # as on a board: precompiled, no compile-time heap peak
        shutil.copytree(slot, compiled, ignore=shutil.ignore_patterns("__pycache__", "*.mpy"))
        compile_slot(compiled)
        script.write_text(MP_SCRIPT.replace("SLOT", repr(str(compiled))).replace("CASE", repr(str(case)))
                          .replace("RUNS", str(args.runs)).replace("NOW_MS", str(int(time.time()) * 1000)))
        done = subprocess.run([str(MICROPYTHON), "-X", "heapsize=64k", str(script)], capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            print(f"MicroPython failed: {done.stdout}{done.stderr}")
            return 1
        lines = done.stdout.splitlines()
        answer = next(line.split()[1] for line in lines if line.startswith("answer"))
        mems = [line for line in lines if line.startswith("mem:")]
        peak_before, peak = (int(mem.split("peak=")[1].split()[0].rstrip(",")) for mem in mems)
        before = int(next(line.split()[1] for line in lines if line.startswith("before")))
        median_us = int(next(line.split()[1] for line in lines if line.startswith("median_us")))
        taken = f"{peak - before} B over the {before} B in use before" if peak > peak_before else \
            f"at most {peak_before - before} B (the peak {peak_before} B was reached before, loading the case)"
        print(f"MicroPython -X heapsize=64k, ota_verify.check: answer {answer}, {median_us / 1000:.1f} ms "
              f"(median of {args.runs}); heap at its peak: {taken}")
        # what the check needs, garbage collected as it goes: the smallest heap that runs it, less the
        # smallest heap that only loads the case and the module
        once = tmp / "mp_once.py"
        once.write_text(script.read_text().replace(f"range({args.runs})", "range(1)"))
        load_only = tmp / "mp_load.py"
        load_only.write_text(once.read_text().replace("why, head = ota_verify.check(", "why, head = None, ("))
        with_check, loading = smallest_heap(once), smallest_heap(load_only)
        print(f"MicroPython: smallest heap that runs the check {with_check} B, that only loads the case and "
              f"ota_verify {loading} B: the check needs about {with_check - loading} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
