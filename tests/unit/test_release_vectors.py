"""contract/release.py against the release vectors (contract/vectors/release/vectors.json), which the
ESP32's verifier must answer the same way (tests/firmware/test_ota_verify_vectors.py)."""

import json
from pathlib import Path
from typing import Any

import pytest

from contract.release import ReleaseRefused, TrustList, TrustListError, check_offer_for_device, verify_release

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "contract/vectors/release/vectors.json").read_text())
TRUSTS = {name: TrustList.from_dict(doc) for name, doc in VECTORS["trusts"].items()}


def _answer(case: dict[str, Any]) -> str:
    try:
        meta = verify_release(case["meta"], case["sigs"], TRUSTS[case["trust"]])
        if "device" in case:
            device = case["device"]
            check_offer_for_device(meta, device["kind"], device["class"], device["running"], device["floor"],
                                   device["now"])
    except ReleaseRefused as refused:
        return refused.reason
    return "ok"


@pytest.mark.parametrize("case", VECTORS["verify"], ids=[case["name"] for case in VECTORS["verify"]])
def test_verify_vector(case: dict[str, Any]) -> None:
    assert _answer(case) == case["expect"]


@pytest.mark.parametrize("case", VECTORS["device"], ids=[case["name"] for case in VECTORS["device"]])
def test_device_vector(case: dict[str, Any]) -> None:
    assert _answer(case) == case["expect"]


@pytest.mark.parametrize("case", VECTORS["trust_lists"], ids=[case["name"] for case in VECTORS["trust_lists"]])
def test_trust_list_vector(case: dict[str, Any]) -> None:
    try:
        TrustList.from_dict(case["doc"])
        valid = True
    except TrustListError:
        valid = False
    assert valid is case["valid"]


def test_the_vectors_cover_every_refusal_code_of_verification_and_of_the_device_checks() -> None:
    seen = {case["expect"] for case in VECTORS["verify"] + VECTORS["device"]}
    assert seen == {"ok", "unsigned", "unknown_key", "bad_signature", "bad_meta", "wrong_kind", "wrong_class",
                    "same_version", "downgrade", "too_old", "no_clock", "expired"}
