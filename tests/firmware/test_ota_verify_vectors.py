"""The ESP32's release verifier (firmware/app_a/ota_verify.py) answers every release vector
(contract/vectors/release/vectors.json) as contract/release.py does, on the real MicroPython unix
port under -X heapsize=64k, precompiled as a board holds it. Also measures one signature check:
time and bytes allocated (printed with pytest -s)."""

import json
import shutil
from pathlib import Path

from provisioning.firmware_build import compile_slot
from tests.firmware.support import REPO, SLOT, run_mp

VECTORS = json.loads((REPO / "contract/vectors/release/vectors.json").read_text())


def test_the_esp32_verifier_answers_every_release_vector_as_the_cpython_one(tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    slot.mkdir()
    shutil.copy(SLOT / "ota_verify.py", slot)
    compile_slot(slot)
    cases = VECTORS["verify"] + VECTORS["device"]
    lines = [json.dumps({"trusts": VECTORS["trusts"]})] + [json.dumps(case) for case in cases]
    (tmp_path / "cases.jsonl").write_text("\n".join(lines) + "\n")
    result = run_mp("mp_ota_verify.py", str(slot), str(tmp_path / "cases.jsonl"), heapsize="64k", timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    answers = dict(line.split()[1:3] for line in result.stdout.splitlines() if line.startswith("case "))
    wrong = {c["name"]: (answers.get(c["name"]), c["expect"]) for c in cases if answers.get(c["name"]) != c["expect"]}
    assert not wrong, wrong
    assert len(answers) == len(cases)
    us, used = next(line.split()[1:] for line in result.stdout.splitlines() if line.startswith("measure "))
    print(f"\nota_verify on the unix port, -X heapsize=64k: one RSA-3072 signature check "
          f"{int(us) / 1000:.1f} ms, {used} bytes allocated (collector off)")
