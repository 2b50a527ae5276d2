"""The ESP32's release verifier (firmware/app_a/ota_verify.py) answers every release vector
(contract/vectors/release/vectors.json) as contract/release.py does, under the real MicroPython
with the ESP32's 64 KB heap.

ota_verify.check() judges signature, metadata and device in one call; for a `verify` vector (which
is about signature and metadata only) a device refusal (wrong_kind ... expired) means the
signature and the metadata passed, i.e. "ok". A trust list the device cannot use must give it no
keys at all (ota_verify.trust_list() -> []).
"""

import json
import shutil
from pathlib import Path
from typing import Any

from provisioning.firmware_build import compile_slot
from tests.firmware.support import REPO, SLOT, run_mp

VECTORS: dict[str, Any] = json.loads((REPO / "contract/vectors/release/vectors.json").read_text())
DEVICE_CODES = {"wrong_kind", "wrong_class", "same_version", "downgrade", "too_old", "no_clock", "expired"}
# a device on which every good `verify` vector passes the device checks
ANY_DEVICE = {"kind": "esp32", "class": "esp32", "running": "0.1.0", "floor": None, "now": VECTORS["now"]}


def _cases_file(folder: Path) -> tuple[Path, dict[str, str]]:
    lines, expected = [], {}
    for case in VECTORS["verify"]:
        keys = VECTORS["trusts"][case["trust"]]["keys"]
        lines.append({"name": case["name"], "meta": case["meta"], "sigs": case["sigs"], "keys": keys,
                      "device": ANY_DEVICE})
        expected[case["name"]] = case["expect"]
    for case in VECTORS["device"]:
        name = f"device/{case['name']}"
        lines.append({"name": name, "meta": case["meta"], "sigs": case["sigs"],
                      "keys": VECTORS["trusts"][case["trust"]]["keys"], "device": case["device"]})
        expected[name] = case["expect"]
    for case in VECTORS["trust_lists"]:
        name = f"trust/{case['name']}"
        lines.append({"name": name, "trust": case["doc"]})
        expected[name] = "valid" if case["valid"] else "invalid"
    path = folder / "cases.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path, expected


def test_the_esp32_verifier_agrees_with_every_release_vector(tmp_path: Path) -> None:
    assert (SLOT / "ota_verify.py").is_file(), "firmware/app_a/ota_verify.py is missing"
    cases, expected = _cases_file(tmp_path)
    slot = tmp_path / "slot"  # precompiled, as a board holds it
    slot.mkdir()
    for name in ("ota_verify.py", "ota_json.py"):
        shutil.copy(SLOT / name, slot)
    compile_slot(slot)
    result = run_mp("mp_release_vectors.py", str(slot), str(cases), heapsize="64k", timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    answers = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    disagreements = []
    for name, expect in expected.items():
        got = answers.get(name, "(no answer)")
        if "/" not in name and got in DEVICE_CODES:
            got = "ok"
        if got != expect:
            disagreements.append(f"{name}: expected {expect}, ota_verify says {got}")
    assert not disagreements, f"{len(disagreements)} of {len(expected)} vectors:\n" + "\n".join(disagreements)
