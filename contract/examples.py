"""Load the contract's example messages (contract/vectors/), for tests on every side."""

import json
from pathlib import Path
from typing import Any

CONTRACT_DIR = Path(__file__).resolve().parent / "vectors"  # package data


def valid_examples() -> dict[str, dict[str, Any]]:
    """name -> {topic, qos, retain, payload} for every file in contract/vectors/examples."""
    return {
        path.stem: json.loads(path.read_text())
        for path in sorted((CONTRACT_DIR / "examples").glob("*.json"))
    }


def invalid_cases() -> list[dict[str, Any]]:
    """Messages the fleet must refuse, each with the reason it is counted under."""
    cases: list[dict[str, Any]] = json.loads((CONTRACT_DIR / "invalid" / "cases.json").read_text())
    return cases


def rule_cases(name: str) -> list[dict[str, Any]]:
    """Sequences of messages and what the fleet must conclude: `presence` or `streams`."""
    cases: list[dict[str, Any]] = json.loads((CONTRACT_DIR / "rules" / f"{name}.json").read_text())
    return cases


def payload_bytes(case: dict[str, Any]) -> bytes:
    """The bytes of a case: `payload` (JSON), `payload_text` (sent as written, which may not be
    JSON), `payload_hex` (raw bytes), `payload_repeat` (one long field) or `payload_nest` (an
    object `depth` levels deep in all: arrays inside one another)."""
    if "payload_text" in case:
        return str(case["payload_text"]).encode()
    if "payload_hex" in case:
        return bytes.fromhex(str(case["payload_hex"]))
    if "payload_nest" in case:
        inner = int(case["payload_nest"]["depth"]) - 1
        return b'{"v":1,"d":' + b"[" * inner + b"]" * inner + b"}"
    if "payload_repeat" in case:
        rep = case["payload_repeat"]
        return json.dumps({"v": 1, "pad": rep["unit"] * rep["times"]}).encode()
    return json.dumps(case["payload"]).encode()
