"""Helpers of the ESP32 OTA tests: release keys, signed releases of the firmware (made with the
signer's own tool, provisioning/release.py), offers, and a board that is started again whenever it
resets itself (as an ESP32 comes back after machine.reset())."""

import json
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioning.hostboard import EXIT_CRASH, EXIT_REBOOT, FIRMWARE_DIR
from provisioning.release import BuildRequest, SigningKey, build_release, keygen, load_signing_key, meta_text
from tests.firmware.support import HostBoard, upstream
from tests.support.http_files import FileServer
from tests.support.mqtt_probe import Probe
from tests.support.wait import wait_for

_KEYS: dict[str, SigningKey] = {}
_KEY_DIR = Path("/tmp") / f"ioc-ota-test-keys-{uuid.uuid4().hex[:8]}"


def key(name: str) -> SigningKey:
    """A release signing key made once per test session (RSA-3072 takes a moment to make)."""
    if name not in _KEYS:
        _KEY_DIR.mkdir(exist_ok=True)
        path = _KEY_DIR / f"{name}.pem"
        keygen(path)
        _KEYS[name] = load_signing_key(path)
    return _KEYS[name]


def public_pem(name: str) -> Path:
    """The public half of key `name` (key.pub.pem beside key.pem), as `--next-key` takes it."""
    key(name)
    return _KEY_DIR / f"{name}.pub.pem"


def trust_json(*names: str) -> str:
    """ota_keys.json trusting the named keys."""
    return json.dumps({"keys": [key(n).public.to_entry() for n in names]})


@dataclass
class Release:
    name: str
    meta: str
    doc: dict[str, Any]
    files: dict[str, bytes]  # sha256 -> content
    sigs: list[dict[str, str]] = field(default_factory=list)

    def signed(self, *names: str) -> "Release":
        data = self.meta.encode()
        return Release(self.name, self.meta, self.doc, self.files, [key(n).sign(data) for n in names])

    def changed(self, **fields: Any) -> "Release":
        """The same release with metadata fields replaced (unsigned: sign it again)."""
        doc = {**self.doc, **fields}
        return Release(f"{doc['kind']}-{doc['version']}", meta_text(doc), doc, self.files)

    def path_sha(self, path: str) -> str:
        return next(f["sha256"] for f in self.doc["files"] if f["path"] == path)


def _patch(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def firmware_tree(dest: Path, *, crash: bool = False, no_link: bool = False) -> Path:
    """A copy of firmware/; `crash`: its app raises at start (a version that crash-loops);
    `no_link`: it never connects to its broker (a version that runs but fails its health gate)."""
    shutil.copytree(FIRMWARE_DIR, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if crash:
        _patch(dest / "app_a" / "app.py", "def main(boot=None):\n",
               "def main(boot=None):\n    raise RuntimeError('a bad build')\n")
    if no_link:
        _patch(dest / "app_a" / "link.py", "            client.connect()\n",
               "            raise OSError('this build cannot connect')\n")
    return dest


def build(tmp: Path, version: str, *, firmware: Path = FIRMWARE_DIR, **request: Any) -> Release:
    """An esp32 release of `firmware` at `version` (unsigned), made by provisioning/release.py."""
    out = tmp / f"release-{version}-{uuid.uuid4().hex[:6]}"
    folder, doc = build_release(BuildRequest(kind="esp32", version=version, out=out, firmware=firmware, **request))
    doc["key"] = key("A").id
    files = {f["sha256"]: (folder / "files" / f["path"]).read_bytes() for f in doc["files"]}
    return Release(f"esp32-{version}", meta_text(doc), doc, files)


def offer(release: Release, url: str, offer_id: str | None = None, action: str = "install") -> str:
    body: dict[str, Any] = {"v": 1, "id": offer_id or f"o-{uuid.uuid4().hex[:8]}", "release": release.name,
                            "action": action, "exp": int(time.time() * 1000) + 3_600_000}
    if action == "install":
        body.update(meta=release.meta, sigs=release.sigs, url=url)
    return json.dumps(body)


class Keeper:
    """Starts the board again whenever it resets itself (exit 3) or its app crashed (exit 70), as an
    ESP32 restarts; counts the restarts. stop() stops watching (the board keeps running).
    `restart_on`: the exit codes that restart it (add -9 for the host HAL's watchdog, which kills
    the interpreter); `before_restart(code)` runs between the exit and the next start."""

    def __init__(self, board: HostBoard, heapsize: str = "64k", *,
                 restart_on: Collection[int] = (EXIT_REBOOT, EXIT_CRASH),
                 before_restart: Callable[[int], None] | None = None) -> None:
        self.board = board
        self.heapsize = heapsize
        self.restart_on = frozenset(restart_on)
        self.before_restart = before_restart
        self.exits: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="board-keeper", daemon=True)
        if not board.running:
            board.start(heapsize)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            proc = self.board.proc
            if proc is not None:
                try:
                    code = proc.wait(0.05)
                except subprocess.TimeoutExpired:
                    continue
                if self._stop.is_set():
                    return
                if code in self.restart_on:
                    self.exits.append(code)
                    if self.before_restart is not None:
                        self.before_restart(code)
                    self.board.start(self.heapsize)
                    continue
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# Where a cut fell: the boot it cut (the old version, the update boot, the new version on trial),
# and the last milestone that boot printed.
_MILESTONES = {
    "update boot": (("update boot: restarting", "restarting"), ("rebooting", "switched, closing"),
                    ("installing", "app.mpy and the switch"), ("verifying", "checking every file again"),
                    ("offer checked", "download"), ("update boot: fw", "checking the offer")),
    "new version on trial": (("boot marked good", "committed"), ("confirmed", "committing"),
                             ("connected", "connected, health gate"), ("boot: slot", "start-up")),
    "old version": (("restarting into the update boot", "restarting for the update"),
                    ("connected", "connected"), ("boot: slot", "start-up")),
}


def cut_phase(console: str) -> str:
    text = "\n".join(line for line in console.splitlines() if "fw: health" not in line)
    boot = ("update boot" if "update boot: fw" in text else
            "new version on trial" if "boot: slot b" in text else "old version")
    for marker, phase in _MILESTONES[boot]:
        if marker in text:
            return f"{boot}: {phase}"
    return f"{boot}: before its first line"


def _update_over(board: HostBoard, offer_id: str) -> bool:
    """The offer has its outcome (ota.json) and the board no trial left (bootstate.json)."""
    try:
        state = json.loads((board.path / "ota.json").read_text())
        boot = json.loads((board.path / "bootstate.json").read_text())
    except (OSError, ValueError):
        return False
    outcome = [e[2] for e in state.get("recent", []) if e[0] == offer_id]
    return bool(outcome) and outcome[0] in ("confirmed", "failed", "rolled_back") and "trial" not in boot


def power_cut_run(board: HostBoard, probe: Probe, server: FileServer, release: Release, cuts: int,
                  rng: random.Random, heapsize: str = "64k", window_s: float = 2.5) -> dict[str, Any]:
    """Offer `release` to a new board on 0.1.0 and cut its power (SIGKILL) at a random moment up to
    `window_s` after each start, starting it again after each cut, until `cuts` cuts were made or
    the update is over; then let it run (started again when it resets itself) until it settles: a
    normal boot judged good, not on trial, no update left. What it ended on, and where the cuts
    fell."""
    (board.path / "ota_keys.json").write_text(trust_json("A"))
    body = offer(release, server.url)
    probe.publish(f"ioc/v1/d/{board.device_id}/ota/offer", body, retain=True)
    offer_id = json.loads(body)["id"]
    done = 0
    restarts = 0
    phases: list[str] = []
    while done < cuts and not _update_over(board, offer_id):
        before = len(board.console())
        board.start(heapsize)
        deadline = time.monotonic() + rng.uniform(0.02, window_s)
        while time.monotonic() < deadline and board.running and not _update_over(board, offer_id):
            time.sleep(0.005)
        if _update_over(board, offer_id):
            break  # no cut once the update is over: the cuts fall into updates only
        if board.running:
            board.kill()
            done += 1
            phases.append(cut_phase(board.console()[before:]))
        else:  # it reset itself (into the update boot, the new slot, ...): started again, as a board
            restarts += 1

    keeper = Keeper(board, heapsize)
    try:
        def settled() -> dict[str, Any] | None:
            births = [m for m in upstream(probe, "birth") if "mode" not in m]
            state = json.loads((board.path / "bootstate.json").read_text())
            if not births or "open" in state or "trial" in state or (board.path / "ota_job.txt").exists():
                return None
            last = births[-1]
            return last if any(m["ses"] == last["ses"] for m in upstream(probe, "health")) else None

        last = wait_for(settled, timeout=120, what="the board settled on a version")
    finally:
        keeper.stop()
        board.kill()
    console = board.console()
    return {"cuts": done, "phases": phases, "self_restarts": restarts + len(keeper.exits), "fw": last["fw"],
            "safe": "safe mode" in console or last.get("mode") == "safe",
            "crashes": console.count("Traceback"), "failed_boots": keeper.exits.count(70),
            "bootstate": json.loads((board.path / "bootstate.json").read_text())}


def cut_summary(results: list[dict[str, Any]]) -> str:
    phases = Counter(p for r in results for p in r["phases"])
    bricked = sum(r["fw"] not in ("0.1.0", "0.2.0") for r in results)
    return (f"ESP32 power cuts during updates: {sum(r['cuts'] for r in results)} cuts in {len(results)} updates; "
            f"ended on the old version (0.1.0): {sum(r['fw'] == '0.1.0' for r in results)}, on the new (0.2.0): "
            f"{sum(r['fw'] == '0.2.0' for r in results)}, bricked: {bricked}, safe mode: "
            f"{sum(r['safe'] for r in results)}, tracebacks: {sum(r['crashes'] for r in results)}, failed boots: "
            f"{sum(r['failed_boots'] for r in results)}; cuts by phase: "
            + ", ".join(f"{k} {v}" for k, v in phases.most_common()))
