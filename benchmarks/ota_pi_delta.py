"""Delta updates of the Pi agent (issue 11): bytes of a bsdiff4 delta against the full artifact for
a patch release, and the speed of the agent's pure-Python patcher (edge/bspatch.py) against the
bsdiff4 C extension the fleet uses to make deltas.

The patch release is tests/edge/ota_support.py's PATCH: one constant changed in edge/agent.py, a
new VERSION; only the ioc-edge wheel differs between the two artifacts (ioc-contract and every
dependency are the same files). A bigger case shows the patcher's speed at the size of a camera
Pi's artifact (OpenCV's wheel is ~50 MB): 64 MB of random bytes, 0.1 % of them changed.

    .venv/bin/python benchmarks/ota_pi_delta.py
"""

import hashlib
import io
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))

import bsdiff4

from edge.bspatch import apply_patch
from tests.edge.ota_support import BASE, PATCH, build_kit


def patch_speed(old: bytes, new: bytes, delta: bytes) -> tuple[float, float]:
    """Seconds to apply `delta` with edge.bspatch (streaming, hashed) and with bsdiff4's C code."""
    out = io.BytesIO()
    digest = hashlib.sha256()
    t0 = time.perf_counter()
    apply_patch(io.BytesIO(old), io.BytesIO(delta), out, max_size=len(new), on_bytes=digest.update)
    pure = time.perf_counter() - t0
    assert out.getvalue() == new
    t0 = time.perf_counter()
    assert bsdiff4.patch(old, delta) == new
    return pure, time.perf_counter() - t0


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ota-pi-delta-") as scratch:
        kit = build_kit(Path(scratch) / "kit", versions=(BASE, PATCH))
        old, new = kit.releases[BASE].data, kit.releases[PATCH].data
    t0 = time.perf_counter()
    delta = bsdiff4.diff(old, new)
    made = time.perf_counter() - t0
    pure, native = patch_speed(old, new, delta)
    print(f"patch release {BASE} -> {PATCH} (ioc-edge wheel only): full artifact {len(new):,} bytes, "
          f"delta {len(delta):,} bytes = {100 * len(delta) / len(new):.2f} % of the full artifact")
    print(f"  bsdiff4.diff (fleet) {made:.2f} s; applying it: edge.bspatch {pure:.3f} s "
          f"({len(new) / pure / 1e6:.0f} MB/s), bsdiff4.patch (C) {native:.3f} s")
    rng = random.Random(1)
    big_old = rng.randbytes(64 << 20)
    changed = bytearray(big_old)
    for _ in range(len(changed) // 1000):
        changed[rng.randrange(len(changed))] = rng.randrange(256)
    big_new = bytes(changed)
    t0 = time.perf_counter()
    big_delta = bsdiff4.diff(big_old, big_new)
    made = time.perf_counter() - t0
    pure, native = patch_speed(big_old, big_new, big_delta)
    print(f"64 MiB, 0.1 % of bytes changed: delta {len(big_delta):,} bytes (diff {made:.0f} s); applying it: "
          f"edge.bspatch {pure:.2f} s ({len(big_new) / pure / 1e6:.0f} MB/s), bsdiff4.patch (C) {native:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
