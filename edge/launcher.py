#!/usr/bin/python3
"""`/opt/ioc-edge/launch --config FILE [agent options]`: systemd's ExecStart for the edge agent.

install.sh copies this file to `<root>/launch`; an update never replaces it, and it uses the
system's python3 and its standard library only, so a broken version cannot break it. Each start:

1. reads the state folder's `ota.json` (the state folder: `EDGE_STATE_DIR`, else `state_dir` of
   the config file, relative to that file);
2. a trial whose version `current` does not point at is dropped (the switch never happened or was
   undone; one that had used up its starts is recorded as rolled back, `crash`);
3. a trial with 3 starts already and no commit: `current` goes back to the version it came from
   (a new link renamed over the old one), the trial is dropped and `rolled_back` (`crash`) is
   recorded for the old agent to report; otherwise the trial's start count goes up by one;
4. runs `<root>/current/bin/edge-agent` with the same arguments (exec: systemd sees the agent).

`<root>` is the folder this file is in (`/opt/ioc-edge`).
"""

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

MAX_TRIAL_STARTS = 3
STATE_FILE = "ota.json"
AGENT = "bin/edge-agent"


def say(message: str) -> None:
    print(f"launch: {message}", file=sys.stderr, flush=True)


def state_dir(argv: list[str]) -> Path | None:
    if os.environ.get("EDGE_STATE_DIR"):
        return Path(os.environ["EDGE_STATE_DIR"])
    config: Path | None = None
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            config = Path(argv[index + 1])
        elif arg.startswith("--config="):
            config = Path(arg.split("=", 1)[1])
    if config is None:
        return None
    try:
        value = tomllib.loads(config.read_text()).get("state_dir")
    except (OSError, ValueError):
        return None  # the agent reports a bad config itself, in one line
    if not isinstance(value, str):
        return None
    path = Path(value)
    return path if path.is_absolute() else config.resolve().parent / path


def read_state(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_state(path: Path, doc: dict[str, Any]) -> None:
    """Atomically, as edge/statefile.py does: a new file, fsynced, renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        handle.write(json.dumps(doc, separators=(",", ":")))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def running_folder(root: Path) -> str | None:
    try:
        return Path(os.readlink(root / "current")).name
    except OSError:
        return None


def switch(root: Path, folder: str) -> None:
    new = root / "current.new"
    try:
        new.unlink()
    except FileNotFoundError:
        pass
    os.symlink(f"versions/{folder}", new)
    os.replace(new, root / "current")
    fsync_dir(root)


def rolled_back(trial: dict[str, Any], msg: str) -> dict[str, Any]:
    return {"offer": trial.get("offer"), "release": trial.get("release"), "reason": "crash", "msg": msg}


def check_trial(root: Path, path: Path) -> None:
    doc = read_state(path)
    trial = doc.get("trial")
    if not isinstance(trial, dict):
        return
    value = trial.get("starts")
    starts = value if isinstance(value, int) else 0
    running = running_folder(root)
    if running != trial.get("to"):
        say(f"dropping a trial of {trial.get('version')}: current points at {running}")
        del doc["trial"]
        if starts >= MAX_TRIAL_STARTS:  # cut between the switch back and this record
            doc["rolled_back"] = rolled_back(trial, f"{trial.get('version')} did not start {MAX_TRIAL_STARTS} times")
        write_state(path, doc)
        return
    if starts >= MAX_TRIAL_STARTS:
        back = trial.get("from")
        if not isinstance(back, str) or not (root / "versions" / back / AGENT).exists():
            say(f"{trial.get('version')} failed {starts} starts but there is no version to go back to")
            return
        say(f"{trial.get('version')} started {starts} times without a commit: back to {back}")
        switch(root, back)
        del doc["trial"]
        doc["rolled_back"] = rolled_back(trial, f"{trial.get('version')} did not start {MAX_TRIAL_STARTS} times")
        write_state(path, doc)
        return
    trial["starts"] = starts + 1
    write_state(path, doc)


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent
    state = state_dir(argv)
    if state is not None:
        try:
            check_trial(root, state / STATE_FILE)
        except OSError as err:  # the agent must still start; it reports an unusable state folder itself
            say(f"cannot use {state / STATE_FILE}: {err}")
    agent = root / "current" / AGENT
    if not agent.exists():
        previous = read_state(state / STATE_FILE).get("previous") if state is not None else None
        if isinstance(previous, str) and (root / "versions" / previous / AGENT).exists():
            say(f"{agent} is missing: back to {previous}")
            switch(root, previous)
    os.execv(str(agent), [str(agent), *argv])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
