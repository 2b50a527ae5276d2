"""What verifying a release costs on the ESP32's side: firmware/app_a/ota_verify.py, precompiled as
a board holds it, on the real MicroPython unix port under -X heapsize=64k, for the release vectors'
good ESP32 release (2 files): the time and the bytes allocated with the collector off (an upper
bound of the heap needed) of one signature check and of the whole check. The figures are printed
(pytest -s); the test fails if the check fails at 64k."""

import json
import shutil
from pathlib import Path

from provisioning.firmware_build import compile_slot
from tests.firmware.support import REPO, SLOT, run_mp

VECTORS = json.loads((REPO / "contract/vectors/release/vectors.json").read_text())


def test_one_release_check_on_a_64k_heap(tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    slot.mkdir()
    for name in ("ota_verify.py", "ota_json.py"):
        shutil.copy(SLOT / name, slot)
    compile_slot(slot)
    good = next(case for case in VECTORS["verify"] if case["name"] == "good")
    case = {"keys": VECTORS["trusts"][good["trust"]]["keys"], "meta": good["meta"], "sigs": good["sigs"]}
    (tmp_path / "case.json").write_text(json.dumps(case))
    result = run_mp("mp_ota_verify.py", str(slot), str(tmp_path / "case.json"), heapsize="64k")
    assert result.returncode == 0, result.stdout + result.stderr
    figures = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    (sig_us, sig_bytes), (check_us, check_bytes) = figures["signature"], figures["check"]
    print(f"\nota_verify, unix port, -X heapsize=64k: signature {int(sig_us) / 1000:.1f} ms and {sig_bytes} bytes "
          f"allocated; whole check (signature, metadata, device) {int(check_us) / 1000:.1f} ms and {check_bytes} "
          f"bytes allocated (collector off: an upper bound of the heap needed)")
