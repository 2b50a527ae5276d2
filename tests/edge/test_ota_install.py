"""OTA on a Pi, end to end: real agent processes (venvs built from real signed releases) started by
the real launcher under a stand-in for systemd, a private Mosquitto, downloads over HTTP with Range
(docs/ota.md "The Pi path"; docs/edge.md "Updates")."""

import json
from collections.abc import Iterator
from pathlib import Path

import bsdiff4
import pytest

from tests.edge.ota_support import BASE, CRASH, PATCH, SICK, Kit, PiRig, offer
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for

TERMINAL = ("confirmed", "failed", "rolled_back")


@pytest.fixture
def rig(tmp_path: Path, ota_kit: Kit, mosquitto: Mosquitto) -> Iterator[PiRig]:
    pi = PiRig(tmp_path / "pi", ota_kit, mosquitto.port).start()
    yield pi
    pi.close()


def wait_terminal(pi: PiRig, release: str, within: float = 90) -> list[str]:
    def ended() -> list[str] | None:
        statuses = pi.statuses(release)
        return statuses if statuses and statuses[-1] in TERMINAL else None

    found = wait_for(ended, timeout=within, what=f"a final status for {release} (log: {pi.log_text()[-2000:]})")
    assert found is not None
    return found


def fw_births(pi: PiRig) -> list[str]:
    return [birth["fw"] for birth in pi.births()]


def test_install_commits_rotates_the_keys_and_rolls_back_on_command(rig: PiRig, ota_kit: Kit) -> None:
    wait_for(lambda: fw_births(rig) == [BASE], what="the first agent's birth")
    other = json.loads(ota_kit.trust.read_text())["keys"][0]  # the trusted key, kept
    from provisioning.release import trust_list

    new_key = trust_list([ota_kit.other_key.with_name("other.pub.pem")]).to_dict()["keys"][0]
    meta, sigs = ota_kit.sign(ota_kit.document(PATCH, keys=[new_key]))
    rig.server.add(ota_kit.releases[PATCH].data)
    rig.publish_offer(offer(ota_kit, None, rig.server.url, meta=meta, sigs=sigs, name="pi-5.0.1"))

    statuses = wait_terminal(rig, "pi-5.0.1")
    steps = [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]
    assert steps == ["received", "downloading", "verifying", "installing", "rebooting", "confirmed"], statuses
    pcts = [p["pct"] for p in rig.progress() if p["status"] == "downloading"]
    assert pcts == sorted(pcts) and pcts[-1] == 100 and len(pcts) <= 11
    wait_for(lambda: fw_births(rig)[-1:] == [PATCH], what="a birth of the new version")
    assert rig.running() == PATCH
    state = rig.ota_state()
    assert state["floor"] == "5.0.0" and state["previous"] == BASE and "trial" not in state
    assert state["keys"] == [new_key] and new_key != other  # the rotation took effect with the commit
    assert sorted(p.name for p in (rig.root / "versions").iterdir()) == [BASE, PATCH]
    assert (rig.root / "versions" / PATCH / "artifact.tar").read_bytes() == ota_kit.releases[PATCH].data

    # the old key is no longer trusted
    rig.publish_offer(offer(ota_kit, ota_kit.releases[SICK], rig.server.url, name="pi-5.0.3"))
    statuses = wait_terminal(rig, "pi-5.0.3")
    assert statuses == ["failed"]
    assert [p["detail"]["reason"] for p in rig.progress() if p["release"] == "pi-5.0.3"] == ["unknown_key"]

    rig.publish_offer(offer(ota_kit, None, rig.server.url, action="rollback", name="pi-back"))
    assert wait_terminal(rig, "pi-back") == ["rolled_back"]
    assert [p["detail"]["reason"] for p in rig.progress() if p["release"] == "pi-back"] == ["command"]
    wait_for(lambda: fw_births(rig)[-1:] == [BASE], what="a birth of the old version")
    assert rig.running() == BASE and rig.ota_state()["previous"] == PATCH


def test_delta_install(rig: PiRig, ota_kit: Kit, artifacts_dir: Path) -> None:
    base, patch = ota_kit.releases[BASE], ota_kit.releases[PATCH]
    delta = bsdiff4.diff(base.data, patch.data)
    delta_sha = rig.server.add(delta)
    full_sha = rig.server.add(patch.data)
    wait_for(lambda: fw_births(rig) == [BASE], what="the first agent's birth")
    rig.publish_offer(offer(ota_kit, patch, rig.server.url,
                            deltas=[{"from": base.file["sha256"], "sha256": delta_sha, "size": len(delta)}]))
    assert wait_terminal(rig, "pi-5.0.1")[-1] == "confirmed"
    assert rig.server.requested(delta_sha) == [None] and rig.server.requested(full_sha) == []
    wait_for(lambda: fw_births(rig)[-1:] == [PATCH], what="a birth of the new version")
    figures = {"full_bytes": len(patch.data), "delta_bytes": len(delta),
               "pct": round(100 * len(delta) / len(patch.data), 2)}
    (artifacts_dir / "edge-ota-delta.json").write_text(json.dumps(figures))


def test_a_delta_that_does_not_make_the_signed_file_falls_back_to_the_full_file(rig: PiRig, ota_kit: Kit) -> None:
    base, patch = ota_kit.releases[BASE], ota_kit.releases[PATCH]
    wrong = bsdiff4.diff(base.data, ota_kit.releases[SICK].data)  # a real patch, to another file
    wrong_sha = rig.server.add(wrong)
    full_sha = rig.server.add(patch.data)
    wait_for(lambda: fw_births(rig) == [BASE], what="the first agent's birth")
    rig.publish_offer(offer(ota_kit, patch, rig.server.url,
                            deltas=[{"from": base.file["sha256"], "sha256": wrong_sha, "size": len(wrong)}]))
    assert wait_terminal(rig, "pi-5.0.1")[-1] == "confirmed"
    assert rig.server.requested(wrong_sha) == [None] and rig.server.requested(full_sha) == [None]
    assert rig.running() == PATCH


def test_a_version_that_crashes_on_start_is_rolled_back_by_the_launcher(rig: PiRig, ota_kit: Kit) -> None:
    rig.server.add(ota_kit.releases[CRASH].data)
    wait_for(lambda: fw_births(rig) == [BASE], what="the first agent's birth")
    rig.publish_offer(offer(ota_kit, ota_kit.releases[CRASH], rig.server.url))
    statuses = wait_terminal(rig, "pi-5.0.2")
    # the old agent reports the launcher's record, and again when the retained offer comes back
    assert statuses[statuses.index("rebooting") + 1:] in (["rolled_back"], ["rolled_back", "rolled_back"]), statuses
    detail = [p for p in rig.progress() if p["release"] == "pi-5.0.2"][-1]["detail"]
    assert detail["reason"] == "crash"
    wait_for(lambda: fw_births(rig)[-1:] == [BASE], what="the old version back")
    assert fw_births(rig) == [BASE, BASE]  # the crashing version never got as far as a birth
    assert rig.running() == BASE
    assert rig.supervisor.exits[0] == 75 and rig.supervisor.exits[1:4] == [1, 1, 1], rig.supervisor.exits
    assert "trial" not in rig.ota_state() and "floor" not in rig.ota_state()
    assert "5.0.2 started 3 times without a commit: back to 5.0.0" in rig.log_text()


def test_a_version_that_never_gets_healthy_is_rolled_back_after_the_trial(tmp_path: Path, ota_kit: Kit,
                                                                          mosquitto: Mosquitto) -> None:
    pi = PiRig(tmp_path / "pi", ota_kit, mosquitto.port, trial_s=10).start()
    try:
        pi.server.add(ota_kit.releases[SICK].data)
        wait_for(lambda: fw_births(pi) == [BASE], what="the first agent's birth")
        pi.publish_offer(offer(ota_kit, ota_kit.releases[SICK], pi.server.url))
        statuses = wait_terminal(pi, "pi-5.0.3", within=120)
        assert statuses[statuses.index("rebooting") + 1:][:1] == ["rolled_back"], statuses
        assert [p for p in pi.progress() if p["release"] == "pi-5.0.3"][-1]["detail"]["reason"] == "health"
        wait_for(lambda: fw_births(pi)[-1:] == [BASE], what="the old version back")
        assert fw_births(pi) == [BASE, SICK, BASE]
        assert pi.running() == BASE and "trial" not in pi.ota_state()
    finally:
        pi.close()


def test_a_download_cut_by_a_power_cut_resumes_with_range(rig: PiRig, ota_kit: Kit) -> None:
    patch = ota_kit.releases[PATCH]
    sha = rig.server.add(patch.data)
    rig.server.rate = len(patch.data) / 8  # about 8 s for the whole file
    wait_for(lambda: fw_births(rig) == [BASE], what="the first agent's birth")
    rig.publish_offer(offer(ota_kit, patch, rig.server.url))
    wait_for(lambda: any(p.get("pct", 0) >= 30 for p in rig.progress()), what="30 % downloaded")
    rig.supervisor.cut()
    rig.server.rate = None
    assert wait_terminal(rig, "pi-5.0.1")[-1] == "confirmed"
    ranges = rig.server.requested(sha)
    assert ranges[0] is None and len(ranges) == 2, ranges
    assert ranges[1] is not None and int(ranges[1].removeprefix("bytes=").rstrip("-")) >= len(patch.data) * 0.3
    assert rig.running() == PATCH
