"""Power cuts during a Pi update (issue 11): the agent's process group (the agent, and pip while it
makes the venv) killed at random moments across the whole update, a few times a round; every round
ends with the device running a verified version, old or new, never broken. The ≥100-cut run is
benchmarks/ota_pi_power_cuts.py."""

import random
from pathlib import Path

from tests.edge.ota_support import Kit, PiRig, power_cuts
from tests.support.mosquitto import Mosquitto

CUTS = 5
WINDOW_S = 8.0  # an uncut update here: ~2 s download (throttled below), ~5 s venv, switch, trial


def test_power_cuts_during_an_update_never_break_the_device(tmp_path: Path, ota_kit: Kit, mosquitto: Mosquitto,
                                                            artifacts_dir: Path) -> None:
    pi = PiRig(tmp_path / "pi", ota_kit, mosquitto.port).start()
    try:
        pi.server.rate = 1_500_000  # bytes/s: the 3 MB artifact takes ~2 s, so cuts land in the download too
        seed = random.randrange(1 << 30)
        report = power_cuts(pi, ota_kit, CUTS, random.Random(seed), window_s=WINDOW_S)
    finally:
        pi.close()
    (artifacts_dir / "edge-ota-power-cuts.txt").write_text(f"seed={seed} {report.line()}\n")
    assert report.broken == 0, (seed, report.notes)
    assert report.failed == 0, (seed, report.notes)
    assert report.cuts == CUTS and report.ended_old + report.ended_new == report.rounds
