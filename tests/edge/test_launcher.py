"""edge/launcher.py, the ExecStart that counts a new version's starts: run as systemd runs it (the
system's Python, isolated, no site-packages), on an install root of two versions whose
`bin/edge-agent` only says who it is."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.edge.ota_support import BASE_PYTHON

LAUNCHER = Path(__file__).resolve().parents[2] / "edge" / "launcher.py"


def make_root(tmp_path: Path, current: str) -> tuple[Path, Path, Path]:
    root, state = tmp_path / "opt", tmp_path / "state"
    for name in ("0.1.0-aaaa", "0.2.0"):
        agent = root / "versions" / name / "bin" / "edge-agent"
        agent.parent.mkdir(parents=True)
        agent.write_text(f'#!/bin/sh\necho "{name} $*"\n')
        agent.chmod(0o755)
    os.symlink(f"versions/{current}", root / "current")
    shutil.copy2(LAUNCHER, root / "launch")
    state.mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "pi-1"\nstate_dir = "{state}"\n')
    return root, state, config


def launch(root: Path, config: Path) -> str:
    done = subprocess.run([BASE_PYTHON, "-I", "-S", str(root / "launch"), "--config", str(config)],
                          capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def ota(state: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((state / "ota.json").read_text())
    return result


def trial(starts: int) -> dict[str, Any]:
    return {"offer": "o-1", "release": "pi-0.2.0", "version": "0.2.0", "to": "0.2.0", "from": "0.1.0-aaaa",
            "floor": "0.1.0", "keys": None, "starts": starts, "at_ms": 1}


def test_without_a_trial_it_runs_current(tmp_path: Path) -> None:
    root, _, config = make_root(tmp_path, "0.1.0-aaaa")
    assert launch(root, config) == f"0.1.0-aaaa --config {config}"


def test_three_starts_on_trial_then_back_to_the_old_version(tmp_path: Path) -> None:
    root, state, config = make_root(tmp_path, "0.2.0")
    (state / "ota.json").write_text(json.dumps({"floor": "0.1.0", "trial": trial(0)}))
    for start in (1, 2, 3):
        assert launch(root, config).startswith("0.2.0 ")
        assert ota(state)["trial"]["starts"] == start
    assert launch(root, config).startswith("0.1.0-aaaa ")  # the 4th start: no commit after 3
    assert os.readlink(root / "current") == "versions/0.1.0-aaaa"
    assert ota(state) == {"floor": "0.1.0", "rolled_back": {"offer": "o-1", "release": "pi-0.2.0", "reason": "crash",
                                                            "msg": "0.2.0 did not start 3 times"}}
    assert launch(root, config).startswith("0.1.0-aaaa ")


def test_a_trial_current_does_not_point_at_is_dropped(tmp_path: Path) -> None:
    root, state, config = make_root(tmp_path, "0.1.0-aaaa")
    (state / "ota.json").write_text(json.dumps({"trial": trial(1)}))  # cut before the switch
    assert launch(root, config).startswith("0.1.0-aaaa ")
    assert ota(state) == {}
    # cut between the launcher's switch back and its record: the record is made at the next start
    (state / "ota.json").write_text(json.dumps({"trial": trial(3)}))
    assert launch(root, config).startswith("0.1.0-aaaa ")
    assert ota(state)["rolled_back"]["reason"] == "crash" and "trial" not in ota(state)


def test_a_current_without_an_agent_falls_back_to_the_previous_version(tmp_path: Path) -> None:
    root, state, config = make_root(tmp_path, "0.2.0")
    (root / "versions" / "0.2.0" / "bin" / "edge-agent").unlink()
    (state / "ota.json").write_text(json.dumps({"previous": "0.1.0-aaaa"}))
    assert launch(root, config).startswith("0.1.0-aaaa ")


def test_it_needs_only_the_standard_library() -> None:
    imports = [line.split()[1] for line in LAUNCHER.read_text().splitlines() if line.startswith(("import ", "from "))]
    assert set(imports) <= set(sys.stdlib_module_names), imports
