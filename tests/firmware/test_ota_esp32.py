"""ESP32 updates over the air (issue 11, docs/ota.md "The ESP32 path", docs/firmware.md "Updates"):
the real firmware on the MicroPython unix port under -X heapsize=64k (sim role), real Mosquitto,
releases built and signed with the signer's own tool (provisioning/release.py), files served over
HTTP with Range (tests/support/http_files.py). A board that resets itself is started again, as an
ESP32 comes back after machine.reset() (tests/firmware/ota_support.Keeper)."""

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.firmware import ota_support as ota
from tests.firmware.support import HostBoard, upstream, wait_upstream
from tests.support.http_files import FileServer
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe
from tests.support.wait import wait_for

HEAP = "64k"


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ota.Release]:
    tmp = tmp_path_factory.mktemp("releases")
    good = ota.build(tmp, "0.2.0")
    return {
        "good": good.signed("A"),
        # raises the floor and rotates the keys: signed by A, it makes B the only trusted key
        "next": ota.build(tmp, "0.3.0", floor="0.3.0", next_keys=(ota.public_pem("B"),)).signed("A"),
        "after": ota.build(tmp, "0.4.0").signed("A"),
        "crash": ota.build(tmp, "0.2.0", firmware=ota.firmware_tree(tmp / "fw-crash", crash=True)).signed("A"),
        "no_link": ota.build(tmp, "0.2.0", firmware=ota.firmware_tree(tmp / "fw-nolink", no_link=True)).signed("A"),
        "old": ota.build(tmp, "0.0.9").signed("A"),
        "expired": ota.build(tmp, "0.2.0", expires_days=1, now_s=time.time() - 3 * 86400).signed("A"),
    }


@pytest.fixture
def server(releases: dict[str, ota.Release]) -> Iterator[FileServer]:
    files: dict[str, bytes] = {}
    for release in releases.values():
        files.update(release.files)
    srv = FileServer(files)
    yield srv
    srv.close()


class Rig:
    """One board with the test key in its trust list, kept running, and the fleet's view of it."""

    def __init__(self, board: HostBoard, probe: Probe, server: FileServer) -> None:
        self.board = board
        self.probe = probe
        self.server = server
        (board.path / "ota_keys.json").write_text(ota.trust_json("A"))
        self.keeper = ota.Keeper(board, HEAP)
        self.mark = 0

    def offer(self, release: ota.Release, offer_id: str | None = None, action: str = "install") -> str:
        """Publish an offer (retained, as the fleet does); wait_status() looks only after it."""
        self.mark = len(upstream(self.probe, "ota/progress"))
        body = ota.offer(release, self.server.url, offer_id, action)
        self.probe.publish(f"ioc/v1/d/{self.board.device_id}/ota/offer", body, retain=True)
        return json.loads(body)["id"]

    def progress(self, release: str, since: int = 0) -> list[dict[str, Any]]:
        return [m for m in upstream(self.probe, "ota/progress")[since:] if m["release"] == release]

    def wait_status(self, release: str, statuses: tuple[str, ...], timeout: float = 60,
                    count: int = 1) -> dict[str, Any]:
        """The `count`-th progress message with one of `statuses` since the last offer."""
        def found() -> dict[str, Any] | None:
            hits = [m for m in self.progress(release, self.mark) if m["status"] in statuses]
            return hits[count - 1] if len(hits) >= count else None

        return wait_for(found, timeout=timeout, what=f"{release} {statuses} on ota/progress")

    def running(self, fw: str, after: int = 0, timeout: float = 30) -> dict[str, Any]:
        """The next normal birth (not the update boot's) after `after` births, with its fw."""
        birth = wait_upstream(self.probe, "birth", lambda m: "mode" not in m, count=after + 1, timeout=timeout)[after]
        assert birth["fw"] == fw, birth
        return birth

    def births(self) -> list[dict[str, Any]]:
        return [m for m in upstream(self.probe, "birth") if "mode" not in m]

    def healthy_on(self, fw: str) -> None:
        """A normal birth with `fw`, then a health message of that stream: the board runs it."""
        birth = wait_for(lambda: next((b for b in reversed(self.births()) if b["fw"] == fw), None),
                         timeout=30, what=f"a birth with fw {fw}")
        wait_upstream(self.probe, "health", lambda m: m["ses"] == birth["ses"] and m["fw"] == fw)

    def close(self) -> None:
        self.keeper.stop()
        self.board.kill()


@pytest.fixture
def rig(boards: Any, probe: Probe, server: FileServer, device_id: str) -> Iterator[Rig]:
    made = Rig(boards(device_id, roles=["sim"], ota_trial_s=8), probe, server)
    yield made
    made.close()


def _statuses(rig: Rig, release: str) -> list[str]:
    out: list[str] = []
    for m in rig.progress(release):
        if not out or out[-1] != m["status"]:
            out.append(m["status"])
    return out


def test_an_update_installs_into_the_other_slot_resumes_a_cut_download_and_commits_after_its_health_gate(
        rig: Rig, releases: dict[str, ota.Release], server: FileServer) -> None:
    good = releases["good"]
    rig.running("0.1.0")
    big = max(good.doc["files"], key=lambda f: f["size"])
    server.cut_after[big["sha256"]] = 1000  # the first download of the largest file breaks off
    rig.offer(good, "r1-d1")
    rig.wait_status(good.name, ("confirmed", "failed"))
    assert rig.progress(good.name)[-1]["status"] == "confirmed", rig.progress(good.name)
    assert _statuses(rig, good.name) == ["received", "downloading", "verifying", "installing", "rebooting",
                                         "confirmed"]
    pcts = [m["pct"] for m in rig.progress(good.name) if m["status"] == "downloading"]
    assert pcts == sorted(set(pcts)) and all(p % 10 == 0 for p in pcts)
    rig.healthy_on("0.2.0")
    assert (big["sha256"], "bytes=1000-") in server.requests  # resumed from the .tmp's length
    state = rig.board.file("bootstate.json")
    assert state == {"active": "b", "tries": 0, "failed": 0}
    assert rig.board.file("ota.json")["slots"] == {"a": "0.1.0", "b": "0.2.0"}
    slot = rig.board.path / "app_b"
    for f in good.doc["files"]:
        assert (slot / f["path"]).stat().st_size == f["size"]
    assert not list(slot.rglob("*.tmp"))
    # The retained offer again (a reconnect): answered, not run again.
    rig.board.kill()
    before = len(rig.progress(good.name))
    rig.board.start(HEAP)
    wait_for(lambda: len(rig.progress(good.name)) > before, what="the offer answered again")
    assert rig.progress(good.name)[-1]["status"] == "confirmed"
    assert rig.board.file("ota.json")["slots"]["b"] == "0.2.0"


def _case(rig: Rig, release: ota.Release, reason: str, births: int) -> None:
    offer_id = rig.offer(release)
    got = rig.wait_status(release.name, ("failed", "confirmed", "rebooting"))
    assert got["status"] == "failed" and got["detail"]["reason"] == reason, (reason, got)
    rig.running("0.1.0", after=births)  # back in its version, not the update boot
    # ... where the retained offer comes again and is answered again, not taken again
    again = rig.wait_status(release.name, ("failed", "confirmed", "rebooting"), count=2)
    assert (again["status"], again["detail"], again["ses"]) == (got["status"], got["detail"], again["ses"])
    assert again["ses"] != got["ses"]  # sent by the running firmware, not the update boot
    assert rig.board.file("bootstate.json")["active"] == "a"
    recent = {e[0]: e for e in rig.board.file("ota.json")["recent"]}
    assert recent[offer_id][2:4] == ["failed", got["detail"]], recent[offer_id]


def test_the_refused_artifact_matrix_each_refusal_reported_and_the_old_version_running(
        rig: Rig, releases: dict[str, ota.Release], server: FileServer) -> None:
    good = releases["good"]
    light = good.path_sha("roles/light.mpy")
    original = server.files[light]
    pi_doc = {"files": [{"path": "ioc-edge-0.2.0.tar", "sha256": light, "size": len(original)}]}
    cases: list[tuple[str, ota.Release, str]] = [
        ("unsigned", good.changed(), "unsigned"),
        ("signed by a key the board does not trust", good.signed("C"), "unknown_key"),
        ("a signature of other metadata",
         ota.Release(good.name, good.meta, good.doc, good.files, good.changed(floor="0.1.0").signed("A").sigs),
         "bad_signature"),
        ("downgrade", releases["old"], "downgrade"),
        ("expired", releases["expired"], "expired"),
        ("another kind's artifact", good.changed(kind="pi", classes=["pi-arm64"], **pi_doc).signed("A"),
         "wrong_kind"),
        ("another device class", good.changed(classes=["pi-arm64"]).signed("A"), "wrong_class"),
        ("tampered file", good, "hash_mismatch"),
        ("truncated file", good, "size_mismatch"),
    ]
    rig.running("0.1.0")
    seen = []
    for births, (name, release, reason) in enumerate(cases, start=1):
        if name == "tampered file":
            server.files[light] = bytes([original[0] ^ 1]) + original[1:]
        elif name == "truncated file":
            server.files[light] = original[:-100]
        _case(rig, release, reason, births)
        server.files[light] = original
        seen.append((name, reason))
    print("\nrefused on the ESP32 (reason on ota/progress, old slot running):", "; ".join(f"{n}: {r}" for n, r in seen))
    rig.healthy_on("0.1.0")
    # never worse: the same board still takes the good release
    rig.offer(good)
    assert rig.wait_status(good.name, ("confirmed",), timeout=60)["status"] == "confirmed"
    rig.healthy_on("0.2.0")


def test_a_version_that_crash_loops_is_left_after_three_boots_and_the_old_slot_reports_rolled_back(
        rig: Rig, releases: dict[str, ota.Release]) -> None:
    crash = releases["crash"]
    rig.running("0.1.0")
    rig.offer(crash)
    got = rig.wait_status(crash.name, ("rolled_back", "failed", "confirmed"), timeout=90)
    assert got["status"] == "rolled_back" and got["detail"]["reason"] == "crash", got
    rig.healthy_on("0.1.0")
    assert rig.keeper.exits.count(70) == 3  # the new slot's three tries
    assert "boot: leaving slot b" in rig.board.console()
    assert rig.board.file("bootstate.json")["active"] == "a"
    assert rig.board.file("ota.json")["slots"]["b"] is None  # not a version to go back to
    assert "safe mode" not in rig.board.console()


def test_a_version_that_never_passes_its_health_gate_goes_back_after_ota_trial_s(
        rig: Rig, releases: dict[str, ota.Release]) -> None:
    no_link = releases["no_link"]
    rig.running("0.1.0")
    rig.offer(no_link)
    got = rig.wait_status(no_link.name, ("rolled_back", "failed", "confirmed"), timeout=90)
    assert got["status"] == "rolled_back" and got["detail"]["reason"] == "health", got
    rig.healthy_on("0.1.0")
    assert "did not pass its health gate in 8 s" in rig.board.console()
    assert rig.board.file("bootstate.json")["active"] == "a"


def test_rollback_command_the_floor_that_forbids_it_and_a_key_rotation(
        rig: Rig, releases: dict[str, ota.Release]) -> None:
    good, nxt, after = releases["good"], releases["next"], releases["after"]
    rig.running("0.1.0")
    rig.offer(good)
    rig.wait_status(good.name, ("confirmed",))
    rig.healthy_on("0.2.0")
    rig.offer(good, action="rollback")
    got = rig.wait_status(good.name, ("rolled_back", "failed"))
    assert got["detail"]["reason"] == "command", got
    rig.healthy_on("0.1.0")
    assert rig.board.file("bootstate.json")["active"] == "a"
    # 0.3.0 raises the floor to 0.3.0: going back to 0.1.0 is refused from then on
    rig.offer(nxt)
    rig.wait_status(nxt.name, ("confirmed",))
    rig.healthy_on("0.3.0")
    assert rig.board.file("ota.json")["floor"] == "0.3.0"
    rig.offer(nxt, action="rollback")
    got = rig.wait_status(nxt.name, ("rolled_back", "failed"))
    assert got["status"] == "failed" and got["detail"]["reason"] == "downgrade", got
    assert rig.board.file("bootstate.json")["active"] == "b"
    # 0.3.0 carried "keys": [B]: committed, B is the trust list, and A is retired
    assert [k["id"] for k in rig.board.file("ota_keys.json")["keys"]] == [ota.key("B").id]
    assert not (rig.board.path / "ota_keys.next").exists()
    rig.offer(after)
    got = rig.wait_status(after.name, ("failed", "received"))
    assert got["status"] == "failed" and got["detail"]["reason"] == "unknown_key", got


CUTS = int(os.environ.get("IOC_OTA_CUTS", "12"))


def test_power_cuts_during_an_update_never_brick_the_board(tmp_path: Path, mosquitto: Mosquitto,
                                                          releases: dict[str, ota.Release], server: FileServer) -> None:
    rng = random.Random(int(os.environ.get("IOC_CUT_SEED", "11")))
    server.rate = 50_000  # ~1.2 s for the slot: cuts land in the download too
    results = []
    left = CUTS
    n = 0
    while left > 0:
        n += 1
        cuts = min(left, rng.randint(2, 5))
        device = f"t-cut-{os.getpid()}-{n}"
        board = HostBoard(tmp_path / device, device, mosquitto.port, roles=["sim"])
        probe = Probe(mosquitto.port, f"ioc/v1/d/{device}/#")
        try:
            results.append(ota.power_cut_run(board, probe, server, releases["good"], cuts, rng, HEAP,
                                             window_s=1.5))
        finally:
            probe.close()
        left -= results[-1]["cuts"]
    print("\n" + ota.cut_summary(results))
    assert all(r["fw"] in ("0.1.0", "0.2.0") for r in results)
    assert not any(r["safe"] for r in results)
    assert not any(r["crashes"] or r["failed_boots"] for r in results), results
