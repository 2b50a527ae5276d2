"""Helpers of the ESP32 OTA tests: release keys, signed releases of the firmware (made with the
signer's own tool, provisioning/release.py), offers, and a board that is started again whenever it
resets itself (as an ESP32 comes back after machine.reset())."""

import json
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioning.hostboard import EXIT_CRASH, EXIT_REBOOT, FIRMWARE_DIR
from provisioning.release import BuildRequest, SigningKey, build_release, keygen, load_signing_key, meta_text
from tests.firmware.support import HostBoard

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
    ESP32 restarts; counts the restarts. stop() stops watching (the board keeps running)."""

    def __init__(self, board: HostBoard, heapsize: str = "64k") -> None:
        self.board = board
        self.heapsize = heapsize
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
                if code in (EXIT_REBOOT, EXIT_CRASH):
                    self.exits.append(code)
                    self.board.start(self.heapsize)
                    continue
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
