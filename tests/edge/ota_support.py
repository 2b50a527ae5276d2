"""Real releases of the edge agent for the OTA tests and the power-cut benchmark, and a Pi made of
folders: an install root with a venv per version, the launcher, and a stand-in for systemd.

Versions are built from a copy of this checkout with VERSION changed (`pip wheel --no-deps`), their
dependencies are the wheels pip downloads once for ioc-edge (as a pi-bundle holds them), and each
release is built and signed by `provision release build/sign` (provisioning/release.py):

    BASE    5.0.0  the running version
    PATCH   5.0.1  a small code change in edge/agent.py; only the ioc-edge wheel differs from BASE's set
    CRASH   5.0.2  exits at once on every start (edge/cli.py)
    SICK    5.0.3  runs but never passes its health gate (edge/agent.py)
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import ota_install
from provisioning.release import (
    BuildRequest,
    build_release,
    keygen,
    load_signing_key,
    meta_text,
    sign_release,
    write_trust,
)

REPO = Path(__file__).resolve().parents[2]
BASE, PATCH, CRASH, SICK = "5.0.0", "5.0.1", "5.0.2", "5.0.3"
DEVICE_CLASS = "pi-x86_64"  # what provision release build names a lab PC (docs/ota.md)
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)

# (file, old text, new text) per version: what makes it differ from BASE
CHANGES: dict[str, list[tuple[str, str, str]]] = {
    BASE: [],
    PATCH: [("edge/agent.py", "DISK_CHECK_S = 2.0", "DISK_CHECK_S = 2.5")],
    CRASH: [("edge/cli.py", "    args = _parser().parse_args(argv)\n",
             "    raise SystemExit('edge-agent: this build crashes on purpose')\n")],
    SICK: [("edge/agent.py", "        return (\n            self.link.connected.is_set()",
            "        return False and (\n            self.link.connected.is_set()")],
}


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True,
                   capture_output=True, timeout=600)


def build_wheels(version: str, workdir: Path, deps: Path | None) -> Path:
    """A folder with the wheel set of `version`: ioc-edge built from a changed copy of the source;
    ioc-contract and the dependencies as BASE's (downloaded by pip for BASE)."""
    src = workdir / f"src-{version}"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for item in ("contract", "edge"):
        shutil.copytree(REPO / item, src / item, ignore=ignore)
    (src / "VERSION").write_text(version + "\n")
    for name, old, new in CHANGES[version]:
        text = (src / name).read_text()
        assert old in text, f"{name} changed: update CHANGES[{version}]"
        (src / name).write_text(text.replace(old, new, 1))
    wheels = workdir / f"wheels-{version}"
    wheels.mkdir()
    if deps is None:  # BASE: build both, and let pip fetch the closure as pi-bundle does
        built = workdir / "built-base"
        _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(built), str(src / "contract"), str(src / "edge"))
        _pip("download", "--only-binary=:all:", "-d", str(wheels), "--find-links", str(built), f"ioc-edge=={version}")
    else:
        for wheel in deps.glob("*.whl"):
            if not wheel.name.startswith("ioc_edge-"):
                shutil.copy2(wheel, wheels / wheel.name)
        _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src / "edge"))
    shutil.rmtree(src)
    return wheels


@dataclass
class Release:
    version: str
    meta: str
    sigs: list[dict[str, str]]
    artifact: Path

    @property
    def data(self) -> bytes:
        return self.artifact.read_bytes()

    @property
    def file(self) -> dict[str, Any]:
        entry: dict[str, Any] = json.loads(self.meta)["files"][0]
        return entry


@dataclass
class Kit:
    """Everything built once per test session."""

    workdir: Path
    key: Path
    other_key: Path
    trust: Path  # ota_keys.json with `key`
    releases: dict[str, Release] = field(default_factory=dict)

    @property
    def base_root(self) -> Path:
        """An install root with BASE installed, copied by each test's Pi."""
        return self.workdir / "base-root"

    def sign(self, document: dict[str, Any], key: Path | None = None) -> tuple[str, list[dict[str, str]]]:
        """Metadata text of `document`, signed (by `key`, default the trusted one)."""
        signer = load_signing_key(key or self.key)
        document = {**document, "key": signer.id}
        text = meta_text(document)
        return text, [signer.sign(text.encode())]

    def document(self, version: str, **changes: Any) -> dict[str, Any]:
        base: dict[str, Any] = json.loads(self.releases[PATCH].meta)
        return {**base, "version": version, **changes}


def build_kit(workdir: Path, versions: tuple[str, ...] = (BASE, PATCH, CRASH, SICK)) -> Kit:
    workdir.mkdir(parents=True, exist_ok=True)
    key, other = workdir / "release.pem", workdir / "other.pem"
    keygen(key)
    keygen(other)
    trust = workdir / "ota_keys.json"
    write_trust([workdir / "release.pub.pem"], trust)
    kit = Kit(workdir, key, other, trust)
    deps = None
    for version in versions:
        wheels = build_wheels(version, workdir, deps)
        deps = deps or wheels
        out = workdir / f"release-{version}"
        build_release(BuildRequest(kind="pi", version=version, out=out, wheels=wheels, classes=(DEVICE_CLASS,),
                                   min_version="5.0.0", floor="5.0.0", signer=workdir / "release.pub.pem"))
        signed, _ = sign_release(out, [key])
        document = json.loads(signed.read_text())
        kit.releases[version] = Release(version, document["meta"], document["sigs"],
                                        out / "files" / f"ioc-edge-{version}.tar")
    install_version(kit.base_root, kit.releases[BASE])
    return kit


def install_version(root: Path, release: Release, *, template: Path | None = None) -> str:
    """Install a release's artifact as the updater does (venv in versions/<v>.new, renamed), point
    current at it, and put the launcher in place; the folder name. With `template` (a root where
    this was done before), its venv is copied instead, its scripts pointed at the new place."""
    if template is not None:
        made = template / "versions" / release.version
        dest = root / "versions" / release.version
        shutil.copytree(made, dest, symlinks=True)
        ota_install.retarget_scripts(dest, made, dest)
        ota_install.Layout(root).switch(release.version)
        shutil.copy2(REPO / "edge" / "launcher.py", root / "launch")
        return release.version
    layout = ota_install.Layout(root)
    layout.versions.mkdir(parents=True, exist_ok=True)
    part = layout.versions / f"{release.version}.part"
    part.mkdir()
    shutil.copy2(release.artifact, part / ota_install.ARTIFACT)
    unpacked = ota_install.unpack(part / ota_install.ARTIFACT, part / "unpacked").parent
    new = layout.versions / f"{release.version}.new"
    for command in ota_install.venv_commands(sys.executable, new, unpacked):
        subprocess.run(command, check=True, capture_output=True, env=ota_install.pip_environment(), timeout=600)
    ota_install.finish_version(layout, release.version, part / ota_install.ARTIFACT)
    shutil.rmtree(part)
    layout.switch(release.version)
    shutil.copy2(REPO / "edge" / "launcher.py", root / "launch")
    return release.version


def write_device_config(path: Path, device_id: str, broker_url: str, root: Path, state: Path, kit: Kit,
                        *, trial_s: int = 300) -> Path:
    path.write_text(f"""device_id = "{device_id}"
state_dir = "{state}"
health_period_s = 1
shutdown_drain_s = 1.0

[broker]
url = "{broker_url}"
backoff_min_s = 0.05
backoff_max_s = 0.5
timeout_s = 5

[ota]
root = "{root}"
keys_file = "{kit.trust}"
device_class = "{DEVICE_CLASS}"
trial_s = {trial_s}

[roles.sim]
period_s = 0.5
seed = 7
""")
    return path


class Supervisor:
    """systemd's part: run `<root>/launch --config FILE` with the system's Python (isolated, no
    site-packages: the launcher must need nothing but the standard library), start it again
    whenever it exits (Restart=always), in its own process group so a cut kills the agent and
    every child it has (pip) at once."""

    def __init__(self, root: Path, config: Path, log: Path, *, restart_s: float = 0.2) -> None:
        self.root, self.config, self.log = root, config, log
        self.restart_s = restart_s
        self.exits: list[int] = []
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"supervisor-{uuid.uuid4().hex[:6]}", daemon=True)

    def start(self) -> "Supervisor":
        self._thread.start()
        return self

    def _loop(self) -> None:
        with self.log.open("ab") as log:
            while not self._stop.is_set():
                with self._lock:
                    if self._stop.is_set():
                        break
                    self._proc = subprocess.Popen(
                        [BASE_PYTHON, "-I", "-S", str(self.root / "launch"), "--config", str(self.config)],
                        stdout=log, stderr=log, start_new_session=True, env=_agent_env())
                    self.starts += 1
                code = self._proc.wait()
                self.exits.append(code)
                if self._stop.wait(self.restart_s):
                    break

    def cut(self) -> None:
        """A power cut, as far as the agent can tell: SIGKILL to it and all its children."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self._thread.join(20)


def _agent_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {name: os.environ[name] for name in keep if name in os.environ}


def offer(kit: Kit, release: Release | None, url: str, *, offer_id: str | None = None, meta: str | None = None,
          sigs: list[dict[str, str]] | None = None, deltas: list[dict[str, Any]] | None = None,
          action: str = "install", name: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"v": 1, "id": offer_id or f"o-{uuid.uuid4().hex[:10]}",
                            "release": name or f"pi-{release.version if release else 'x'}", "action": action}
    if action == "install":
        assert release is not None or meta is not None
        body["meta"] = meta if meta is not None else release.meta  # type: ignore[union-attr]
        body["sigs"] = sigs if sigs is not None else release.sigs  # type: ignore[union-attr]
        body["url"] = url
        if deltas:
            body["deltas"] = deltas
    body["exp"] = int(time.time() * 1000) + 3_600_000
    return body


def progress_of(payloads: list[dict[str, Any]], release: str) -> list[str]:
    return [p["status"] for p in payloads if p.get("release") == release]


def first(payloads: list[dict[str, Any]], pick: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return next((p for p in payloads if pick(p)), None)


class PiRig:
    """One Pi made of folders: BASE installed in `root`, its state folder, its config, the launcher
    run by a Supervisor, a probe on its subtree, and a Range server for its downloads."""

    def __init__(self, workdir: Path, kit: Kit, broker_port: int, *, trial_s: int = 300,
                 device_id: str | None = None, probe: bool = True) -> None:
        from tests.support.mqtt_probe import Probe
        from tests.support.range_server import RangeServer

        self.kit = kit
        self.id = device_id or f"t-{uuid.uuid4().hex[:10]}"
        self.root, self.state = workdir / "opt", workdir / "state"
        self.broker_port = broker_port
        install_version(self.root, kit.releases[BASE], template=kit.base_root)
        self.config = write_device_config(workdir / "agent.toml", self.id, f"mqtt://127.0.0.1:{broker_port}",
                                          self.root, self.state, kit, trial_s=trial_s)
        self.server = RangeServer()
        self.probe = Probe(broker_port, f"ioc/v1/d/{self.id}/#") if probe else None
        self.log = workdir / "agent.log"
        self.supervisor = Supervisor(self.root, self.config, self.log)

    def start(self) -> "PiRig":
        self.supervisor.start()
        return self

    def close(self) -> None:
        self.supervisor.stop()
        if self.probe is not None:
            self.probe.publish(f"ioc/v1/d/{self.id}/ota/offer", b"", retain=True)
            self.probe.close()
        self.server.close()

    def publish_offer(self, body: dict[str, Any] | bytes) -> None:
        assert self.probe is not None
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.probe.publish(f"ioc/v1/d/{self.id}/ota/offer", payload, retain=True)

    def progress(self) -> list[dict[str, Any]]:
        assert self.probe is not None
        return self.probe.payloads("ota/progress")

    def statuses(self, release: str) -> list[str]:
        return progress_of(self.progress(), release)

    def births(self) -> list[dict[str, Any]]:
        assert self.probe is not None
        return self.probe.payloads("birth")

    def running(self) -> str | None:
        return ota_install.Layout(self.root).running_folder()

    def ota_state(self) -> dict[str, Any]:
        path = self.state / "ota.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class CutReport:
    """Power cuts during updates: how each round ended (docs/ota.md, issue 11's power-cut count)."""

    cuts: int = 0
    rounds: int = 0
    ended_old: int = 0
    ended_new: int = 0
    broken: int = 0
    failed: int = 0  # rounds whose update reported `failed` (a cut must never cause one)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"cuts={self.cuts} rounds={self.rounds} ended_old={self.ended_old} ended_new={self.ended_new} "
                f"broken={self.broken} failed={self.failed} seconds={self.seconds:.0f}")


def _healths_since(pi: PiRig, count: int) -> list[dict[str, Any]]:
    assert pi.probe is not None
    return pi.probe.payloads("health")[count:]


def settle(pi: PiRig, release: str, within: float) -> str | None:
    """After the cuts: the update's last word is final, nothing is on trial, and the agent that
    `current` points at is alive (it sends health with its own version). The version, or None."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        statuses = pi.statuses(release)
        if statuses and statuses[-1] in ("confirmed", "failed", "rolled_back") and "trial" not in pi.ota_state():
            folder = pi.running()
            assert pi.probe is not None
            seen = len(pi.probe.payloads("health"))
            while folder and time.monotonic() < deadline:
                fresh = _healths_since(pi, seen)
                if fresh and ota_install.Layout(pi.root).is_complete(folder):
                    version = ota_install.folder_version(folder)
                    if fresh[-1]["fw"] == version:
                        return version
                time.sleep(0.1)
        time.sleep(0.1)
    return None


def back_to_base(pi: PiRig, kit: Kit, round_no: int, within: float = 60) -> None:
    """Between rounds: the device runs BASE again and holds no other version (a fresh device)."""
    if pi.running() != BASE:
        pi.publish_offer(offer(kit, None, pi.server.url, action="rollback", name=f"pi-back-{round_no}"))
        if settle(pi, f"pi-back-{round_no}", within) != BASE:
            raise AssertionError(f"the rollback command did not bring back {BASE}: {pi.log_text()[-2000:]}")
    for entry in (pi.root / "versions").iterdir():
        if entry.name != BASE:
            shutil.rmtree(entry)


def power_cuts(pi: PiRig, kit: Kit, cuts: int, rng: Any, *, window_s: float, settle_s: float = 120,
               max_per_round: int = 3, on_round: Callable[[CutReport], None] | None = None) -> CutReport:
    """Update BASE -> PATCH again and again; in each round kill the agent's process group (agent,
    pip) 1 to `max_per_round` times, each at a random moment up to `window_s` after the offer or
    the previous cut; then wait for the device to settle. `window_s` should cover a whole update
    (download, venv, switch, trial)."""
    report = CutReport()
    started = time.monotonic()
    patch = kit.releases[PATCH]
    pi.server.add(patch.data)
    while report.cuts < cuts:
        report.rounds += 1
        back_to_base(pi, kit, report.rounds)
        name = f"pi-cut-{report.rounds}"
        pi.publish_offer(offer(kit, patch, pi.server.url, name=name))
        for _ in range(min(rng.randint(1, max_per_round), cuts - report.cuts)):
            time.sleep(rng.uniform(0, window_s))
            pi.supervisor.cut()
            report.cuts += 1
        version = settle(pi, name, settle_s)
        if version is None:
            report.broken += 1
            report.notes.append(f"round {report.rounds}: not settled; log tail: {pi.log_text()[-1500:]}")
            break
        if pi.statuses(name)[-1] == "failed":
            report.failed += 1
            report.notes.append(f"round {report.rounds}: failed: {pi.progress()[-1]}")
        if version == PATCH:
            report.ended_new += 1
        elif version == BASE:
            report.ended_old += 1
        else:
            report.broken += 1
        report.seconds = time.monotonic() - started
        if on_round is not None:
            on_round(report)
    report.seconds = time.monotonic() - started
    return report
