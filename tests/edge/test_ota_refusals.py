"""The refused-artifact matrix on a real agent process (docs/ota.md, refusal codes): each refusal
is seen on ota/progress with its reason, and the agent keeps running the version it ran, without a
restart and without leftovers in versions/."""

import base64
import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.edge.ota_support import BASE, PATCH, Kit, PiRig, offer
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for


@pytest.fixture
def rig(tmp_path: Path, ota_kit: Kit, mosquitto: Mosquitto) -> Iterator[PiRig]:
    pi = PiRig(tmp_path / "pi", ota_kit, mosquitto.port).start()
    yield pi
    pi.close()


def answers(pi: PiRig, release: str) -> list[tuple[str, str | None]]:
    return [(p["status"], (p.get("detail") or {}).get("reason")) for p in pi.progress() if p["release"] == release]


def final_answer(pi: PiRig, release: str) -> tuple[str, str | None] | None:
    found = answers(pi, release)
    return found[-1] if found and found[-1][0] in ("failed", "confirmed") else None


def test_every_refusal_is_reported_and_the_old_version_keeps_running(rig: PiRig, ota_kit: Kit) -> None:
    patch = ota_kit.releases[PATCH]
    data = patch.data
    sha = patch.file["sha256"]
    trusted_id = json.loads(ota_kit.trust.read_text())["keys"][0]["id"]

    def signed(**changes: Any) -> dict[str, Any]:
        meta, sigs = ota_kit.sign(ota_kit.document(changes.pop("version", PATCH), **changes))
        return {"meta": meta, "sigs": sigs}

    other_meta, other_sigs = ota_kit.sign(ota_kit.document(PATCH), key=ota_kit.other_key)
    forged = base64.b64encode(bytes(384)).decode()
    esp32_file = {"path": "app.mpy", "sha256": "0" * 64, "size": 10}
    tampered = bytes([data[0] ^ 1]) + data[1:]
    cases: list[tuple[str, dict[str, Any], bytes | None, str, str]] = [
        # (name, offer fields, bytes served under the signed sha256, expected status, reason)
        ("unsigned", {"meta": patch.meta, "sigs": []}, None, "failed", "unsigned"),
        ("wrong-key", {"meta": other_meta, "sigs": other_sigs}, None, "failed", "unknown_key"),
        ("bad-signature", {"meta": patch.meta, "sigs": [{"key": trusted_id, "sig": forged}]}, None, "failed",
         "bad_signature"),
        ("tampered", {}, tampered, "failed", "hash_mismatch"),
        ("truncated", {}, data[:-4096], "failed", "size_mismatch"),
        ("downgrade", signed(version="4.9.0", min_version="4.0.0", floor="4.0.0"), None, "failed", "downgrade"),
        ("too-old", signed(version="5.1.0", min_version="5.0.1"), None, "failed", "too_old"),
        ("expired", signed(expires=int(time.time()) - 60), None, "failed", "expired"),
        ("esp32", signed(kind="esp32", classes=["esp32"], files=[esp32_file]), None, "failed", "wrong_kind"),
        ("other-class", signed(classes=["pi-arm64", "pi-armv7"]), None, "failed", "wrong_class"),
        ("same-version", signed(version=BASE), None, "confirmed", ""),
    ]
    wait_for(lambda: [b["fw"] for b in rig.births()] == [BASE], what="the agent's birth")
    for name, fields, served, status, reason in cases:
        if served is not None:
            rig.server.add(served, as_sha=sha)
        body = {**offer(ota_kit, patch, rig.server.url, name=f"pi-{name}"), **fields}
        rig.publish_offer(body)
        final = wait_for(functools.partial(final_answer, rig, f"pi-{name}"),
                         what=f"the answer to {name} (log: {rig.log_text()[-1500:]})")
        assert final == (status, reason or None), (name, answers(rig, f"pi-{name}"))

    # a rollback command with no version kept beside the running one
    rig.publish_offer(offer(ota_kit, None, rig.server.url, action="rollback", name="pi-back"))
    wait_for(lambda: answers(rig, "pi-back") == [("failed", "no_previous")], what="no_previous")

    # a malformed offer, and a redelivered one: answered again, not handled again
    rig.publish_offer(b'{"v": 1, "id": "x", "release": "pi-malformed", "action": "install"}')
    wait_for(lambda: answers(rig, "pi-malformed") == [("failed", "bad_offer")], what="bad_offer")
    first = {**offer(ota_kit, patch, rig.server.url, name="pi-again", offer_id="again-1"), "sigs": []}
    rig.publish_offer(first)
    wait_for(lambda: answers(rig, "pi-again") == [("failed", "unsigned")], what="the first answer")
    rig.publish_offer(first)
    wait_for(lambda: answers(rig, "pi-again") == [("failed", "unsigned")] * 2, what="the same answer again")
    remembered = json.loads((rig.state / "ota-offers.json").read_text())
    assert len(remembered) == 8 and remembered[-1]["id"] == "again-1"  # the last 8 offers only

    assert rig.supervisor.exits == [] and [b["fw"] for b in rig.births()] == [BASE]  # never restarted
    assert rig.running() == BASE
    assert sorted(p.name for p in (rig.root / "versions").iterdir()) == [BASE]  # no leftovers
    assert "trial" not in rig.ota_state()

