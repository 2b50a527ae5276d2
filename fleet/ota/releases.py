"""Releases in the fleet: publish (check the signature, store the files), deltas, offers, downloads.

The rules of docs/ota.md and docs/fleet.md "Releases", free of FastAPI: the routes
(fleet/api/routes/releases.py) translate `PublishRefused` and `DownloadRefused` into answers.

- A release is uploaded as a tar of the folder `provision release build/sign` writes:
  `release.json` (`{"meta": <metadata text>, "sigs": [...]}`) and `files/<path>` for every path
  the metadata lists (a file next to release.json, `<path>`, is taken too), at the tar's root or
  in one folder. Other members (meta.json) are ignored.
- The metadata must check with `contract.release.verify_release` against the keys in
  FLEET_OTA_KEYS (read at every publish: adding a key needs no restart), must not have expired,
  and every file must have its signed size and SHA-256.
- Pi releases get bsdiff4 deltas from the files of the last DELTA_BASES pi releases published for
  one of its classes, each kept only when at most DELTA_MAX_RATIO of the full file. They are made
  after the publish has answered, by the delta worker (`start()`/`close()`, one release at a
  time), since an 80 MB artifact takes about a minute a base; the release's `deltas_state` says
  when they are there. An offer made before lists none, and the device downloads the full file.
"""

import asyncio
import json
import logging
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import bsdiff4
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from contract.release import ReleaseMeta, ReleaseRefused, TrustList, TrustListError, verify_release
from fleet.models import Device, DeviceStatus
from fleet.ota.models import Release, ReleaseBlob
from fleet.ota.store import CHUNK, FileStore, StoreError, is_sha256
from fleet.ota.tokens import DownloadGrant, TokenError, check_token, make_token, token_secret
from fleet.settings import Settings
from fleet.tasks import stop_tasks

log = logging.getLogger(__name__)

RELEASE_JSON = "release.json"
FILES_DIR = "files"  # provisioning/release.py's folder of the release's files
RELEASE_JSON_MAX = 16 * 1024  # 4096 bytes of metadata, four signatures, JSON escapes
DELTA_BASES = 3
DELTA_MAX_RATIO = 0.5
Action = Literal["install", "rollback"]


class PublishRefused(Exception):
    """A release the fleet does not take: `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg


class DownloadRefused(Exception):
    """A download the fleet does not serve: 403 (the token) or 404 (no such file)."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg


@dataclass(frozen=True, slots=True)
class Download:
    release: Release
    sha256: str
    size: int


def release_name(meta: ReleaseMeta) -> str:
    """`<class>-<version>` for a release of one class (`esp32-0.2.0`, `pi-arm64-0.2.0`: the Pi's
    targets have different wheels, so one version is several releases), else `<kind>-<version>`."""
    if len(meta.classes) == 1:
        return f"{meta.classes[0]}-{meta.version_text}"
    return meta.name


# reading an upload (in a worker thread) -------------------------------------------------------
def _member_name(name: str) -> str:
    path = PurePosixPath(name)
    parts = [part for part in path.parts if part != "."]
    return "/".join(parts)


class _Upload:
    """A release tar opened for reading; `prefix` is the folder release.json is in ("" or "x/")."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, "r:*")
        except (tarfile.TarError, OSError) as err:
            raise PublishRefused(400, "the upload is not a tar archive of a release folder") from err
        try:
            self.members = {_member_name(m.name): m for m in self.tar.getmembers() if m.isreg()}
        except (tarfile.TarError, OSError, EOFError) as err:
            self.tar.close()
            raise PublishRefused(400, "the tar archive is damaged or truncated") from err
        found = [name for name in self.members if name == RELEASE_JSON or (
            name.endswith("/" + RELEASE_JSON) and name.count("/") == 1)]
        if len(found) != 1:
            self.tar.close()
            raise PublishRefused(422, f"the tar holds no {RELEASE_JSON} at its root or in one folder"
                                 if not found else f"the tar holds more than one {RELEASE_JSON}")
        self.prefix = found[0][: -len(RELEASE_JSON)]

    def close(self) -> None:
        self.tar.close()

    def _member(self, name: str) -> tarfile.TarInfo | None:
        if name == RELEASE_JSON:
            return self.members.get(self.prefix + name)
        return self.members.get(f"{self.prefix}{FILES_DIR}/{name}") or self.members.get(self.prefix + name)

    def _open(self, name: str) -> IO[bytes] | None:
        member = self._member(name)
        return self.tar.extractfile(member) if member is not None else None

    def signed(self) -> tuple[str, Any]:
        handle = self._open(RELEASE_JSON)
        assert handle is not None
        data = handle.read(RELEASE_JSON_MAX + 1)
        if len(data) > RELEASE_JSON_MAX:
            raise PublishRefused(422, f"{RELEASE_JSON} is longer than {RELEASE_JSON_MAX} bytes")
        try:
            document = json.loads(data)
        except ValueError as err:
            raise PublishRefused(422, f"{RELEASE_JSON} is not JSON") from err
        if not isinstance(document, dict) or not isinstance(document.get("meta"), str):
            raise PublishRefused(422, f'{RELEASE_JSON} is {{"meta": <metadata text>, "sigs": [...]}}')
        return document["meta"], document.get("sigs")

    def size_of(self, path: str) -> int | None:
        member = self._member(path)
        return member.size if member is not None else None

    def copy_to(self, path: str, dest: Path) -> None:
        handle = self._open(path)
        assert handle is not None
        with dest.open("wb") as out:
            while chunk := handle.read(CHUNK):
                out.write(chunk)


def well_formed(sigs: Any) -> list[dict[str, str]]:
    """The signatures an offer carries: the `{"key", "sig"}` entries as published, nothing else
    (an entry by a key the fleet does not hold stays: a device may hold it)."""
    return [{"key": e["key"], "sig": e["sig"]} for e in sigs
            if isinstance(e, dict) and isinstance(e.get("key"), str) and isinstance(e.get("sig"), str)]


def _diff(old: bytes, new: bytes) -> bytes:
    patch: bytes = bsdiff4.diff(old, new)
    return patch


class Releases:
    """The fleet's releases: one per process part that needs them (the routes, the rollout engine)."""

    def __init__(self, settings: Settings, store: FileStore | None = None) -> None:
        self.settings = settings
        self.store = store or FileStore(settings.ota_dir)
        self.store.open()
        self.secret = token_secret(settings.ota_token_secret, settings.ota_dir)
        self.token_ttl_s = settings.ota_token_ttl_s
        # publish, delete and a delta's storing change which blobs are referenced: one at a time
        self.lock = asyncio.Lock()
        self._deltas_wanted = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    # keys -----------------------------------------------------------------------------------
    def trust(self) -> TrustList:
        path = self.settings.ota_keys
        if path is None:
            raise PublishRefused(503, "the fleet holds no release keys: set FLEET_OTA_KEYS to the signers' "
                                      "public keys")
        try:
            return TrustList.load(path)
        except (OSError, TrustListError) as err:
            raise PublishRefused(503, f"FLEET_OTA_KEYS cannot be read: {err}") from err

    # publish --------------------------------------------------------------------------------
    async def publish(self, upload: Path, actor: str, now_s: float | None = None) -> Release:
        """Check and store the release in the tar `upload` (removed afterwards); PublishRefused if not."""
        now_s = time.time() if now_s is None else now_s
        trust = await asyncio.to_thread(self.trust)
        try:
            opened = await asyncio.to_thread(_Upload, upload)
            try:
                async with self.lock:
                    return await self._publish(opened, trust, actor, now_s)
            finally:
                opened.close()
        finally:
            await asyncio.to_thread(upload.unlink, missing_ok=True)

    async def _publish(self, upload: _Upload, trust: TrustList, actor: str, now_s: float) -> Release:
        meta_text, sigs = await asyncio.to_thread(upload.signed)
        try:
            meta = verify_release(meta_text, sigs, trust)
        except ReleaseRefused as err:
            raise PublishRefused(422, f"release refused: {err.reason}: {err.msg}") from err
        if meta.expires <= now_s:
            raise PublishRefused(422, "release refused: expired: the metadata's expiry has passed; sign it again")
        name = release_name(meta)
        if await Release.exists(name=name):
            raise PublishRefused(409, f"release {name!r} is already published")
        stored: list[tuple[str, int]] = []
        try:
            release = await self._store_files(upload, meta, sigs, name, actor, stored)
        except BaseException:
            await self._forget([sha for sha, _ in stored])  # what this upload left unreferenced
            raise
        if meta.kind == "pi":
            self._deltas_wanted.set()
        return release

    async def _store_files(self, upload: _Upload, meta: ReleaseMeta, sigs: Any, name: str, actor: str,
                           stored: list[tuple[str, int]]) -> Release:
        for index, entry in enumerate(meta.files):
            where = f"files[{index}] ({entry.path})"
            size = upload.size_of(entry.path)
            if size is None:
                raise PublishRefused(422, f"release refused: {where} is not in the upload")
            if size != entry.size:
                raise PublishRefused(422, f"release refused: size_mismatch: {where} is {size} bytes, "
                                          f"signed {entry.size}")
            staged = self.store.temp_path()
            await asyncio.to_thread(upload.copy_to, entry.path, staged)
            try:
                await self.store.put(staged, entry.sha256, entry.size)
            except StoreError as err:
                raise PublishRefused(422, f"release refused: {err.reason}: {where}: {err}") from err
            stored.append((entry.sha256, entry.size))
        try:
            async with in_transaction():
                release = await Release.create(
                    name=name, kind=meta.kind, version=meta.version_text,
                    min_version=".".join(map(str, meta.min_version)), floor=".".join(map(str, meta.floor)),
                    classes=list(meta.classes), meta=meta.text, sigs=well_formed(sigs), key_ids=list(meta.signed_by),
                    files=[{"path": f.path, "sha256": f.sha256, "size": f.size} for f in meta.files],
                    expires=meta.expires, total_size=meta.total_size, created_by=actor[:80],
                    deltas_state="pending" if meta.kind == "pi" else "none")
                for sha256, size in dict(stored).items():
                    await ReleaseBlob.create(release=release, sha256=sha256, size=size)
        except IntegrityError as err:
            raise PublishRefused(409, f"release {name!r} is already published") from err
        return release

    # deltas (a background task: an 80 MB artifact takes about a minute per base) ---------------
    def start(self) -> None:
        """Run the delta worker (named `fleet-ota-deltas`) until close(): it makes the deltas of
        every release left `pending`, those of a fleet that stopped meanwhile included."""
        if self._worker is None:
            self._deltas_wanted.set()
            self._worker = asyncio.create_task(self._delta_worker(), name="fleet-ota-deltas")

    async def close(self) -> None:
        """Stop the worker; a release it was working on stays `pending` and is done at the next start."""
        await stop_tasks([self._worker])
        self._worker = None

    async def _delta_worker(self) -> None:
        while True:
            await self._deltas_wanted.wait()
            self._deltas_wanted.clear()
            while (release := await Release.filter(deltas_state="pending").order_by("id").first()) is not None:
                try:
                    made = await self.make_deltas(release)
                    state = "done"
                    log.info("release %s: %d delta(s)", release.name, made)
                except Exception:
                    state = "failed"  # the release is served whole; a device falls back to the full file
                    log.exception("release %s: the deltas could not be made", release.name)
                await Release.filter(id=release.id).update(deltas_state=state)

    async def make_deltas(self, release: Release) -> int:
        """bsdiff4 patches into the release's file from the files of the last DELTA_BASES Pi releases
        published before it for one of its classes; kept when at most DELTA_MAX_RATIO of the file."""
        target = release.files[0]
        if target["size"] > self.settings.ota_delta_file_max:
            log.info("release %s: no deltas for a file over FLEET_OTA_DELTA_FILE_MAX", release.name)
            return 0
        bases = await (Release.filter(kind="pi", id__lt=release.id).order_by("-id")
                       .limit(50).values("name", "classes", "files"))
        chosen = [b for b in bases if set(b["classes"]) & set(release.classes)][:DELTA_BASES]
        if not chosen:
            return 0
        new = await self.store.read_all(target["sha256"])
        made = 0
        for base in chosen:
            base_sha = base["files"][0]["sha256"]
            if base_sha == target["sha256"] or await self.store.size(base_sha) is None:
                continue
            old = await self.store.read_all(base_sha)
            patch = await asyncio.to_thread(_diff, old, new)
            del old
            if len(patch) > DELTA_MAX_RATIO * len(new):
                continue
            async with self.lock:  # a delete of the release meanwhile must not leave the patch behind
                sha256 = await self.store.put_bytes(patch)
                if not await Release.exists(id=release.id):
                    await self._forget([sha256])
                    return made
                await ReleaseBlob.get_or_create(release_id=release.id, sha256=sha256, defaults={
                    "size": len(patch), "base_sha256": base_sha, "base_release": base["name"]})
            made += 1
        return made

    # delete ---------------------------------------------------------------------------------
    async def in_use_by(self, release: Release) -> list[str]:
        """The rollouts that name the release, as `<id> (<status>)` (fleet/ota/rollout_models.py keeps
        a rollout's release for its history: a release is deleted only once no rollout names it)."""
        rollouts = getattr(release, "rollouts", None)  # the reverse relation, when rollouts are registered
        if rollouts is None:
            return []
        rows = await rollouts.all().order_by("-id").limit(5).values("id", "status")
        return [f"{row['id']} ({row['status']})" for row in rows]

    async def delete(self, release: Release) -> None:
        """Remove the release and every blob no other release names; PublishRefused(409) while in use."""
        async with self.lock:
            users = await self.in_use_by(release)
            if users:
                raise PublishRefused(409, f"release {release.name!r} is named by rollout {', '.join(users)}: "
                                          "a release is deleted only once no rollout names it")
            blobs = await ReleaseBlob.filter(release_id=release.id).values_list("sha256", flat=True)
            await release.delete()
            await self._forget([str(sha) for sha in blobs])

    async def _forget(self, blobs: Sequence[str]) -> None:
        for sha256 in set(blobs):
            if not await ReleaseBlob.exists(sha256=sha256):
                await self.store.delete(sha256)

    # deltas and offers ----------------------------------------------------------------------
    async def deltas(self, release: Release) -> list[dict[str, Any]]:
        """The release's deltas as an offer lists them: `{"from", "sha256", "size"}`."""
        rows = await ReleaseBlob.filter(release_id=release.id, base_sha256__isnull=False).order_by("id")
        return [{"from": row.base_sha256, "sha256": row.sha256, "size": row.size} for row in rows]

    async def deltas_for(self, release: Release, current_sha256: str | None) -> list[dict[str, Any]]:
        """The deltas that patch the file a device holds (`current_sha256`) into the release's file."""
        return [d for d in await self.deltas(release) if current_sha256 is not None and d["from"] == current_sha256]

    def token(self, device_id: str, release_name: str, now_s: float) -> tuple[str, int]:
        """A download token for one device and one release, and its expiry (Unix s)."""
        expires = int(now_s) + self.token_ttl_s
        return make_token(self.secret, device_id, release_name, expires), expires

    async def build_offer(self, release: Release, device_id: str, offer_id: str, action: Action,
                          base_url: str | None = None, now: float | None = None,
                          current_sha256: str | None = None) -> dict[str, Any]:
        """The `ota/offer` payload of docs/ota.md for one device (not yet published).

        `install`: the signed metadata and signatures, the download URL with the device's own
        token (valid FLEET_OTA_TOKEN_TTL_S), and for a Pi release its deltas (only those from
        `current_sha256` when the caller knows the device's file). `rollback`: neither. `exp`
        (Unix ms) is the token's expiry: the offer is worth nothing after it.
        """
        now = time.time() if now is None else now
        base = (base_url or self.settings.public_base_url()).rstrip("/")
        token, expires = self.token(device_id, release.name, now)
        offer: dict[str, Any] = {"v": 1, "id": offer_id, "release": release.name, "action": action}
        if action == "install":
            offer["meta"] = release.meta
            offer["sigs"] = release.sigs
            offer["url"] = f"{base}/ota/files/{{sha256}}?t={token}"
            if release.kind == "pi":
                deltas = (await self.deltas_for(release, current_sha256) if current_sha256
                          else await self.deltas(release))
                if deltas:
                    offer["deltas"] = deltas
        offer["exp"] = expires * 1000
        return offer

    # downloads ------------------------------------------------------------------------------
    async def authorize(self, token: str | None, sha256: str, now_s: float | None = None) -> Download:
        """The file a token may fetch: DownloadRefused 403 (token) or 404 (no such file)."""
        now_s = time.time() if now_s is None else now_s
        if not token:
            raise DownloadRefused(403, "a download needs the token of an offer: ?t=<token>")
        try:
            grant: DownloadGrant = check_token(self.secret, token, now_s)
        except TokenError as err:
            raise DownloadRefused(403, str(err)) from err
        device = await Device.get_or_none(id=grant.device_id)
        if device is None or device.status == DeviceStatus.DECOMMISSIONED:
            raise DownloadRefused(403, "the token's device is not registered or is decommissioned")
        release = await Release.get_or_none(name=grant.release)
        if release is None:
            raise DownloadRefused(403, "the token's release is no longer published")
        if not is_sha256(sha256):
            raise DownloadRefused(404, "no such file: files are named by their SHA-256, 64 lowercase hex digits")
        blob = await ReleaseBlob.get_or_none(release_id=release.id, sha256=sha256)
        if blob is None:
            if await ReleaseBlob.exists(sha256=sha256):
                raise DownloadRefused(403, "the file is not part of the token's release")
            raise DownloadRefused(404, "no such file")
        size = await self.store.size(sha256)
        if size is None:
            raise DownloadRefused(404, "no such file (missing from the store)")
        return Download(release, sha256, size)

    async def count(self, download: Download, length: int) -> None:
        await Release.filter(id=download.release.id).update(downloads=F("downloads") + 1,
                                                            bytes_served=F("bytes_served") + length)
