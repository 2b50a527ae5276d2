"""Over-the-air updates of the agent itself (docs/ota.md "The Pi path", docs/edge.md "Updates").

`ota/offer` (retained) → checks (signature against the trust list, kind, class, versions, expiry)
→ download (a delta against the running version's kept artifact, or the full file, resumed with
HTTP Range) → the signed size and SHA-256 → a venv made offline in versions/<v>.new → renamed
versions/<v> → the trial recorded in the state folder's `ota.json` → `current` switched → exit 75.
The new version, started by `/opt/ioc-edge/launch` (edge/launcher.py, which counts its starts),
commits once it is connected, its birth sent, every role started and its first health message
acknowledged; otherwise it goes back (`health`) after `ota.trial_s`. Every step and every refusal
is reported on `ota/progress` through the numbered queue.

`ota.json` (shared with the launcher, which reads and writes it with the standard library only):

    {"floor": "0.2.0",               the lowest version this device may run again (anti-rollback)
     "previous": "0.1.0-3fa2c81b90d4", the versions/ folder kept beside the running one
     "keys": [{"id", "n"}, ...],      the trust list after a committed rotation (else keys_file)
     "trial": {"offer", "release", "version", "to", "from", "floor", "keys", "starts", "at_ms"},
     "rolled_back": {"offer", "release", "reason", "msg"}}   written by the launcher, reported here
"""

import asyncio
import contextlib
import json
import logging
import platform
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.release import (
    ReleaseMeta,
    ReleaseRefused,
    TrustList,
    TrustListError,
    check_offer_for_device,
    parse_version,
    verify_release,
)
from edge.config import AgentConfig
from edge.errors import EdgeError, StateError
from edge.ota_install import (
    ARTIFACT,
    DELTA,
    InstallFailed,
    Layout,
    Stopped,
    check_file,
    clean,
    download,
    finish_version,
    folder_version,
    is_no_space,
    patch_file,
    pip_environment,
    sha256_file,
    unpack,
    venv_commands,
)
from edge.statefile import read_json, write_json
from edge.uplink import Uplink

log = logging.getLogger(__name__)

STATE_FILE = "ota.json"
OFFERS_FILE = "ota-offers.json"
OFFERS_KEPT = 8  # offer ids remembered with their outcome (docs/ota.md)
TERMINAL = ("failed", "confirmed", "rolled_back")
NOT_REMEMBERED = ("busy", "no_clock")  # answered, but the same offer is taken again later
OFFER_ID_MAX = 64
URL_MAX = 2048
DELTAS_MAX = 8
VENV_TIMEOUT_S = 300.0
PIP_TIMEOUT_S = 900.0
TRIAL_POLL_S = 0.2
NEARLY_FULL_BYTES = 1 << 20  # a venv command failed with less than this free: no_space
UNKNOWN_RELEASE = "unknown"


def this_device_class() -> str:
    """pi-arm64, pi-armv7, or for another machine `pi-<machine>` (a lab PC: pi-x86_64, as
    `provision release build` names it): the class a release's `classes` must name."""
    machine = platform.machine().lower()
    bits = 64 if sys.maxsize > 2**32 else 32
    if machine in ("aarch64", "arm64") and bits == 64:
        return "pi-arm64"
    if machine.startswith(("armv7", "armv8", "aarch64")):
        return "pi-armv7"
    return "pi-" + re.sub(r"[^a-z0-9_-]", "-", machine)[:29]


@dataclass(frozen=True)
class Delta:
    base: str  # sha256 of the file it patches
    sha256: str
    size: int


@dataclass(frozen=True)
class Offer:
    id: str
    release: str
    action: str
    meta: Any = None
    sigs: Any = None
    url: str = ""
    deltas: tuple[Delta, ...] = field(default_factory=tuple)

    def url_of(self, sha256: str) -> str:
        return self.url.replace("{sha256}", sha256)


def _text(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _is_sha(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def parse_offer(payload: bytes) -> Offer:
    """The offer, or ReleaseRefused `bad_offer` (its `msg` never repeats the offered values)."""
    try:
        body = json.loads(payload)
    except ValueError:
        raise ReleaseRefused("bad_offer", "the offer is not JSON") from None
    if not isinstance(body, dict) or body.get("v") != 1:
        raise ReleaseRefused("bad_offer", "the offer is not a v1 object")
    if not _text(body.get("id"), OFFER_ID_MAX) or not _text(body.get("release"), 64):
        raise ReleaseRefused("bad_offer", "id and release must be text of 1 to 64 characters")
    action = body.get("action")
    if action == "rollback":
        return Offer(body["id"], body["release"], "rollback")
    if action != "install":
        raise ReleaseRefused("bad_offer", "action must be install or rollback")
    url = body.get("url")
    if not isinstance(url, str) or not _text(url, URL_MAX) or "{sha256}" not in url or not url.startswith(("http://", "https://")):
        raise ReleaseRefused("bad_offer", "url must be an http(s) address with {sha256} in it")
    deltas: list[Delta] = []
    raw = body.get("deltas", [])
    if not isinstance(raw, list) or len(raw) > DELTAS_MAX:
        raise ReleaseRefused("bad_offer", f"deltas must be a list of at most {DELTAS_MAX}")
    for entry in raw:
        if (not isinstance(entry, dict) or not _is_sha(entry.get("from")) or not _is_sha(entry.get("sha256"))
                or not isinstance(entry.get("size"), int) or isinstance(entry.get("size"), bool)
                or entry["size"] < 0):
            raise ReleaseRefused("bad_offer", "a delta is {from, sha256, size}")
        deltas.append(Delta(entry["from"], entry["sha256"], entry["size"]))
    return Offer(body["id"], body["release"], "install", body.get("meta"), body.get("sigs"), url, tuple(deltas))


def _release_of(payload: bytes) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        release = json.loads(payload).get("release")
        if _text(release, 64):
            return str(release)
    return UNKNOWN_RELEASE


def _higher(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if parse_version(a) >= parse_version(b) else b


class Updater:
    """The agent's OTA part: `open()` at start, `receive` as the ota/offer handler, `run()` as a task."""

    def __init__(self, config: AgentConfig, uplink: Uplink, *, restart: Callable[[], None],
                 running_version: str) -> None:
        self.config = config
        self.uplink = uplink
        self.restart = restart
        self.running_version = running_version
        self.layout = Layout(config.ota.root)
        self.device_class = config.ota.device_class or this_device_class()
        self.state_path = config.state_dir / STATE_FILE
        self.offers_path = config.state_dir / OFFERS_FILE
        self.trial: dict[str, Any] | None = None
        self._pending: asyncio.Queue[Offer] = asyncio.Queue(maxsize=1)
        self._busy: str | None = None  # the offer being handled
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- state ------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        doc = read_json(self.state_path, {}, if_corrupt={})
        return doc if isinstance(doc, dict) else {}

    def _save(self, doc: Mapping[str, Any]) -> None:
        write_json(self.state_path, {k: v for k, v in doc.items() if v is not None})

    def _remembered(self, offer_id: str) -> dict[str, Any] | None:
        offers = read_json(self.offers_path, [], if_corrupt=[])
        for entry in offers if isinstance(offers, list) else []:
            if isinstance(entry, dict) and entry.get("id") == offer_id:
                return entry
        return None

    def _remember(self, offer_id: str, release: str, status: str, detail: dict[str, str] | None) -> None:
        offers = read_json(self.offers_path, [], if_corrupt=[])
        offers = [o for o in (offers if isinstance(offers, list) else [])
                  if isinstance(o, dict) and o.get("id") != offer_id]
        offers.append({"id": offer_id, "release": release, "status": status, "detail": detail})
        try:
            write_json(self.offers_path, offers[-OFFERS_KEPT:])
        except StateError as err:
            log.warning("%s: could not remember offer %s: %s", self.config.device_id, offer_id, err)

    def _progress(self, release: str, status: str, *, pct: int | None = None,
                  detail: Mapping[str, str] | None = None) -> None:
        fields: dict[str, Any] = {"release": release, "status": status}
        if pct is not None:
            fields["pct"] = pct
        if detail is not None:
            fields["detail"] = dict(detail)
        try:
            self.uplink.emit("ota/progress", fields)
        except EdgeError as err:
            log.error("%s: could not report OTA progress: %s", self.config.device_id, err)

    def _finish(self, offer_id: str, release: str, status: str, detail: dict[str, str] | None = None) -> None:
        """A terminal status: reported, and remembered for a redelivery of the same offer."""
        self._progress(release, status, detail=detail)
        if detail is None or detail.get("reason") not in NOT_REMEMBERED:
            self._remember(offer_id, release, status, detail)
        if detail is not None:
            log.warning("%s: update %s %s: %s: %s", self.config.device_id, release, status,
                        detail.get("reason"), detail.get("msg"))
        else:
            log.info("%s: update %s %s", self.config.device_id, release, status)

    # -- start --------------------------------------------------------------------------------

    def open(self) -> None:
        """At start, before the link: report a rollback the launcher made; find a trial of this run."""
        doc = self._state()
        changed = False
        record = doc.pop("rolled_back", None)
        if isinstance(record, dict) and _text(record.get("offer"), OFFER_ID_MAX):
            release = record.get("release") if _text(record.get("release"), 64) else UNKNOWN_RELEASE
            reason = record.get("reason") if record.get("reason") in ("crash", "health", "command") else "crash"
            msg = str(record.get("msg") or "the new version did not start")[:200]
            self._finish(record["offer"], str(release), "rolled_back", {"reason": str(reason), "msg": msg})
            changed = True
        trial = doc.get("trial")
        if isinstance(trial, dict):
            if self.layout.running_folder() == trial.get("to"):
                self.trial = trial
                self._busy = str(trial.get("offer"))
                log.info("%s: version %s on trial (start %s of 3); it commits once healthy",
                         self.config.device_id, trial.get("version"), trial.get("starts"))
            else:  # the switch never happened, or was undone: nothing is on trial
                log.warning("%s: dropping a trial of %s that current does not point at",
                            self.config.device_id, trial.get("version"))
                doc.pop("trial")
                changed = True
        if changed:
            self._save(doc)

    # -- offers -------------------------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        """The ota/offer handler (the link skips empty retained payloads)."""
        try:
            offer = parse_offer(payload)
        except ReleaseRefused as err:
            self._progress(_release_of(payload), "failed", detail={"reason": err.reason, "msg": err.msg})
            return
        if offer.id == self._busy:
            return  # a redelivery of the offer being handled (or on trial): it reports by itself
        known = self._remembered(offer.id)
        if known is not None:
            detail = known.get("detail")
            self._progress(str(known.get("release") or offer.release), str(known.get("status")),
                           detail=detail if isinstance(detail, dict) else None)
            return
        if self._busy is not None or self._pending.full():
            self._progress(offer.release, "failed", detail={"reason": "busy", "msg": "another update runs"})
            return
        self._busy = offer.id
        self._pending.put_nowait(offer)

    async def run(self, healthy: Callable[[], bool]) -> None:
        """The OTA task: a trial's gate first, then offers one at a time."""
        self._loop = asyncio.get_running_loop()
        try:
            if self.trial is not None:
                if not await self._watch_trial(healthy):
                    return
            while True:
                offer = await self._pending.get()
                try:
                    await self._handle(offer)
                finally:
                    if self._busy == offer.id:
                        self._busy = None
        finally:
            self._stop.set()  # a download in a worker thread gives up at its next chunk

    async def _handle(self, offer: Offer) -> None:
        try:
            if offer.action == "rollback":
                self._rollback_command(offer)
                return
            meta = self._check(offer)
            self._progress(offer.release, "received")
            await self._install(offer, meta)
        except ReleaseRefused as err:
            if err.reason == "same_version":
                self._finish(offer.id, offer.release, "confirmed")
            else:
                self._finish(offer.id, offer.release, "failed", {"reason": err.reason, "msg": err.msg})
        except InstallFailed as err:
            self._finish(offer.id, offer.release, "failed", {"reason": err.reason, "msg": err.msg})
        except Stopped:
            pass  # the agent stops; the retained offer comes again and the download resumes
        except Exception as err:  # a bug must not take the agent down: the old version keeps running
            log.exception("%s: update %s failed", self.config.device_id, offer.release)
            self._finish(offer.id, offer.release, "failed", {"reason": "install", "msg": type(err).__name__})

    def _trust(self) -> TrustList:
        keys = self._state().get("keys")
        try:
            if keys:
                return TrustList.from_entries(keys)
            return TrustList.load(self.config.ota.keys_file)
        except (OSError, TrustListError) as err:
            raise ReleaseRefused("unknown_key", f"this device has no usable trust list ({type(err).__name__})") from err

    def _check(self, offer: Offer) -> ReleaseMeta:
        meta = verify_release(offer.meta, offer.sigs, self._trust())
        try:
            parse_version(self.running_version)
        except ValueError:
            raise InstallFailed("install", "this agent is not a release version (a source checkout?)") from None
        floor = self._state().get("floor")
        check_offer_for_device(meta, "pi", self.device_class, self.running_version, floor, time.time())
        if self.layout.running_folder() is None:
            raise InstallFailed("install", f"this agent is not installed in {self.layout.root} (no current link)")
        return meta

    # -- install ------------------------------------------------------------------------------

    def _reporter(self, release: str) -> Callable[[int, int], None]:
        """A progress callback for a worker thread: `downloading` at most every 10 %."""
        last = [-10]
        loop = self._loop

        def report(have: int, size: int) -> None:
            pct = 100 if size == 0 else have * 100 // size
            if pct >= last[0] + 10 and loop is not None:
                last[0] = step = pct - pct % 10
                loop.call_soon_threadsafe(lambda: self._progress(release, "downloading", pct=step))

        return report

    def _fetch(self, offer: Offer, meta: ReleaseMeta, running: str, part: Path) -> str:
        """The signed file into part/artifact.tar: by a delta when one fits, else in full; "delta"/"full"."""
        entry = meta.files[0]
        artifact = part / ARTIFACT
        report = self._reporter(offer.release)
        base = self.layout.versions / running / ARTIFACT
        if offer.deltas and not artifact.exists() and base.is_file():
            base_sha = sha256_file(base)
            delta = next((d for d in offer.deltas if d.base == base_sha and d.size < entry.size), None)
            if delta is not None:
                patch = part / DELTA
                try:
                    download(offer.url_of(delta.sha256), patch, delta.size, stop=self._stop,
                             on_bytes=lambda n: report(n, delta.size))
                    check_file(patch, delta.size, delta.sha256)
                    if patch_file(base, patch, artifact, entry.size, entry.sha256):
                        return "delta"
                    log.warning("%s: the delta did not make the signed file; fetching it in full",
                                self.config.device_id)
                except InstallFailed as err:
                    if err.reason == "no_space":
                        raise
                    log.warning("%s: the delta failed (%s); fetching the file in full", self.config.device_id, err)
                finally:
                    patch.unlink(missing_ok=True)
        download(offer.url_of(entry.sha256), artifact, entry.size, stop=self._stop,
                 on_bytes=lambda n: report(n, entry.size))
        return "full"

    async def _install(self, offer: Offer, meta: ReleaseMeta) -> None:
        version = meta.version_text
        layout = self.layout
        running = layout.running_folder()
        assert running is not None  # _check
        previous = self._state().get("previous")
        part = layout.versions / f"{version}.part"
        new = layout.versions / f"{version}.new"
        try:
            layout.versions.mkdir(parents=True, exist_ok=True)
            # Old versions and other updates' leftovers go first: the disk holds current + previous + this.
            layout.prune({n for n in (running, previous, part.name, new.name, version) if n})
            if not layout.is_complete(version):
                part.mkdir(exist_ok=True)
                how = await asyncio.to_thread(self._fetch, offer, meta, running, part)
                self._progress(offer.release, "verifying")
                entry = meta.files[0]
                await asyncio.to_thread(check_file, part / ARTIFACT, entry.size, entry.sha256)
                self._progress(offer.release, "installing")
                await self._make_venv(version, part, new)
                clean(part)
                log.info("%s: %s installed (%s download)", self.config.device_id, version, how)
        except InstallFailed as err:
            if err.reason != "download":  # a download that failed for the network resumes next time
                clean(part, new)  # give the space back; nothing was switched
            raise
        except OSError as err:
            clean(new)
            if is_no_space(err):
                clean(part)
                raise InstallFailed("no_space", f"the disk is full ({layout.versions})") from err
            raise InstallFailed("install", f"cannot write {layout.versions}: {err.strerror or err}") from err
        self._switch_to(offer, meta, version, running)

    async def _run(self, command: list[str], timeout: float, what: str) -> None:
        proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    env=pip_environment())
        try:
            async with asyncio.timeout(timeout):
                output, _ = await proc.communicate()
        except BaseException:  # a timeout, or the agent stopping: the child must not outlive it
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode:
            text = output.decode(errors="replace")
            # pip says so; venv's ensurepip only fails: then the disk, still holding what it made, is the witness
            full = shutil.disk_usage(self.layout.versions).free < NEARLY_FULL_BYTES
            if "No space left" in text or "Errno 28" in text or full:
                raise InstallFailed("no_space", f"the disk is full ({what})")
            lines = [line for line in text.splitlines() if line.strip()]
            raise InstallFailed("install", f"{what} failed: {(lines[-1] if lines else '')[:160]}")

    async def _make_venv(self, version: str, part: Path, new: Path) -> None:
        clean(new)
        unpacked = await asyncio.to_thread(lambda: unpack(part / ARTIFACT, part / "unpacked").parent)
        make, pip = venv_commands(sys.executable, new, unpacked)
        try:
            await self._run(make, VENV_TIMEOUT_S, "python -m venv")
            await self._run(pip, PIP_TIMEOUT_S, "pip install")
        except TimeoutError as err:
            raise InstallFailed("install", "making the venv took too long") from err
        await asyncio.to_thread(finish_version, self.layout, version, part / ARTIFACT)

    def _switch_to(self, offer: Offer, meta: ReleaseMeta, version: str, running: str) -> None:
        doc = self._state()
        doc["trial"] = {
            "offer": offer.id, "release": offer.release, "version": version, "to": version, "from": running,
            "floor": ".".join(map(str, meta.floor)),
            "keys": meta.keys.to_dict()["keys"] if meta.keys is not None else None,
            "starts": 0, "at_ms": int(time.time() * 1000),
        }
        self._save(doc)  # before the switch: a version that is current is always on trial until it commits
        self._progress(offer.release, "rebooting")
        self.layout.switch(version)
        log.info("%s: current -> %s; restarting into it", self.config.device_id, version)
        self.restart()

    # -- the trial ----------------------------------------------------------------------------

    async def _watch_trial(self, healthy: Callable[[], bool]) -> bool:
        """Commit once healthy; roll back after trial_s. True when committed."""
        started = time.monotonic()
        while not healthy():
            if time.monotonic() - started > self.config.ota.trial_s:
                self._rollback_trial()
                return False
            await asyncio.sleep(TRIAL_POLL_S)
        self._commit()
        return True

    def _commit(self) -> None:
        trial = self.trial
        assert trial is not None
        doc = self._state()
        doc["floor"] = _higher(doc.get("floor"), trial.get("floor"))
        doc["previous"] = trial.get("from")
        if trial.get("keys"):
            doc["keys"] = trial["keys"]  # the rotation takes effect only with the commit
        doc.pop("trial", None)
        self._save(doc)
        self.trial = None
        self._busy = None
        self._finish(str(trial["offer"]), str(trial["release"]), "confirmed")
        removed = self.layout.prune({n for n in (trial.get("to"), trial.get("from")) if n})
        if removed:
            log.info("%s: removed old versions %s", self.config.device_id, ", ".join(removed))

    def _rollback_trial(self) -> None:
        trial = self.trial
        assert trial is not None
        self._finish(str(trial["offer"]), str(trial["release"]), "rolled_back",
                     {"reason": "health", "msg": f"not healthy within {self.config.ota.trial_s} s"})
        self.uplink.outbox.commit()
        self.layout.switch(str(trial["from"]))
        doc = self._state()
        doc.pop("trial", None)
        self._save(doc)
        self.trial = None
        self.restart()

    def _rollback_command(self, offer: Offer) -> None:
        doc = self._state()
        previous, running = doc.get("previous"), self.layout.running_folder()
        if not isinstance(previous, str) or previous == running or not self.layout.is_complete(previous):
            raise InstallFailed("no_previous", "no version is kept beside the running one")
        floor = doc.get("floor")
        if floor is not None and parse_version(folder_version(previous)) < parse_version(floor):
            raise InstallFailed("downgrade", "the kept version is below this device's floor")
        self._finish(offer.id, offer.release, "rolled_back",
                     {"reason": "command", "msg": f"back to {folder_version(previous)}"})
        self.uplink.outbox.commit()
        self.layout.switch(previous)
        doc["previous"] = running
        self._save(doc)
        self.restart()
