"""`provision check`: the checks at the pole, as the fleet judges them (GET /api/devices/{id}/check),
after the install tests asked for (POST /api/devices/{id}/install-test); one line per item.

docs/provisioning.md, "provision check"; the items are docs/assets.md's "Checks at the pole".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provisioning.errors import CheckFailed, CheckIncomplete, ProvisionError
from provisioning.fleet_api import FleetClient

TEST_ITEMS = {"lamp_on": "lamp_test", "test_tone": "tone_test"}  # the item each test's result shows in


@dataclass(frozen=True)
class CheckRequest:
    device_id: str
    lamp_test: bool = False
    lamp_seconds: int = 30
    tone_test: bool = False
    wait_s: float = 45.0  # how long the tests' results may take to come back
    interval_s: float = 1.0


def _pending(check: dict[str, Any], tests: list[str]) -> bool:
    """A test's item not there yet, or still a WARN (no answer, no reading): its result is still coming."""
    by_item = {i["item"]: i["status"] for i in check["items"]}
    return any(by_item.get(TEST_ITEMS[t], "warn") == "warn" for t in tests)


def run_check(fleet: FleetClient, request: CheckRequest, *, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Send the tests asked for, then read the check until their results are in or wait_s passed."""
    tests = [t for t, wanted in (("lamp_on", request.lamp_test), ("test_tone", request.tone_test)) if wanted]
    for test in tests:
        fleet.install_test(request.device_id, test, request.lamp_seconds if test == "lamp_on" else None)
    deadline = clock() + request.wait_s
    while True:
        check = fleet.check(request.device_id)
        if not tests or not _pending(check, tests) or clock() >= deadline:
            return check
        sleep(request.interval_s)


def lines(check: dict[str, Any]) -> list[str]:
    return [f"{i['status'].upper()} {i['item']}: {i['detail']}" for i in check["items"]]


def verdict(check: dict[str, Any]) -> None:
    """Nothing if every item passed; else the error with the exit status (15 a FAIL, 16 only WARNs)."""
    statuses = [i["status"] for i in check["items"]]
    failed = [i["item"] for i in check["items"] if i["status"] == "fail"]
    if failed:
        raise CheckFailed(f"{check['device_id']}: {len(failed)} of {len(statuses)} items failed: {', '.join(failed)}")
    warned = [i["item"] for i in check["items"] if i["status"] == "warn"]
    if warned:
        raise CheckIncomplete(f"{check['device_id']}: not proven yet: {', '.join(warned)}")
    if not statuses:
        raise ProvisionError(f"{check['device_id']}: the fleet returned no items")
