"""The snapshot store (docs/relay.md, "Snapshots"): the images devices upload, once each by SHA-256.

Files are `FLEET_SNAPSHOT_DIR/<first 2 hex>/<sha256>.jpg`, written under a temporary name in the
same folder and renamed, so a reader never sees half an image; one `relay_snapshot` row per image
(written after its file, deleted before it: a row always has its file).

Bounds:
- one upload: FLEET_SNAPSHOT_MAX_BYTES (the route refuses more with 413);
- one device's share: the images it uploaded first, FLEET_SNAPSHOT_DEVICE_MAX_MB; an upload that
  would pass it is refused (507) until retention or the store's bound frees room;
- the whole store: FLEET_SNAPSHOT_STORE_MAX_MB; past it the oldest images (by arrival) are deleted
  until it fits again, never the one just stored;
- age: FLEET_RETENTION_SNAPSHOTS_DAYS, pruned by the ops retention run (fleet/ops/retention.py).

Who may fetch an image: people with the `snapshots` permission, or a relay endpoint holding a
signed URL (`snapshot_url`: fleet/auth/url_tokens.py tokens, domain `ioc-relay-snapshot`, the
"device" field `endpoint:<name>`, the subject the SHA-256).
"""

import asyncio
import hashlib
import logging
import os
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tortoise.exceptions import IntegrityError
from tortoise.functions import Sum

from fleet.auth.url_tokens import UrlTokenError, check_token, load_secret, make_token
from fleet.relay.models import Snapshot
from fleet.settings import Settings

log = logging.getLogger(__name__)

DOMAIN = "ioc-relay-snapshot"
MEDIA_TYPE = "image/jpeg"
ENDPOINT_PREFIX = "endpoint:"
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
MB = 1024 * 1024
PRUNE_BATCH = 1_000  # images deleted per statement by retention
PRUNE_BATCHES = 20  # statements per retention run


class SnapshotError(Exception):
    """An upload the store refuses: `status` is the HTTP answer (400, 422, 507)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_jpeg(body: bytes) -> bool:
    """Starts with the JPEG SOI marker and a marker after it (FF D8 FF) and ends with EOI (FF D9):
    what every JPEG encoder writes, and what a truncated file lacks."""
    return len(body) >= 5 and body.startswith(b"\xff\xd8\xff") and body.endswith(b"\xff\xd9")


def token_secret(settings: Settings) -> bytes:
    return load_secret(settings.snapshot_token_secret, settings.snapshot_dir)


def snapshot_url(settings: Settings, endpoint_name: str, sha256: str, now: datetime) -> str:
    """An absolute signed URL that lets relay endpoint `endpoint_name` fetch image `sha256` for
    FLEET_SNAPSHOT_URL_TTL_S from `now` (an endpoint name must not hold '~')."""
    expires = int(now.timestamp()) + settings.snapshot_url_ttl_s
    token = make_token(token_secret(settings), DOMAIN, ENDPOINT_PREFIX + endpoint_name, sha256, expires)
    return f"{settings.public_base_url()}/api/snapshots/{sha256}?token={token}"


def endpoint_of_token(settings: Settings, token: str, sha256: str, now: datetime) -> str:
    """The actor (`endpoint:<name>`) a valid token for image `sha256` speaks for; UrlTokenError if
    it is malformed, forged, expired, for another image or not an endpoint's."""
    grant = check_token(token_secret(settings), DOMAIN, token, now.timestamp(), renew="a newer relayed message")
    if grant.subject != sha256 or not grant.device_id.startswith(ENDPOINT_PREFIX):
        raise UrlTokenError("the token is for another image")
    return grant.device_id


async def held(sha256: str) -> bool:
    """Whether the fleet holds image `sha256` (its row exists: a row always has its file)."""
    return await Snapshot.exists(sha256=sha256)


async def _bytes_of(**where: str) -> int:
    rows = await Snapshot.filter(**where).annotate(total=Sum("bytes")).values("total")
    return int(rows[0]["total"] or 0) if rows else 0


class SnapshotStore:
    """The files and rows of the snapshot store; one per fleet process (the routes' and retention's)."""

    def __init__(self, settings: Settings) -> None:
        self.folder = settings.snapshot_dir
        self.device_max = settings.snapshot_device_max_mb * MB
        self.store_max = settings.snapshot_store_max_mb * MB
        self.keep = timedelta(days=settings.retention_snapshots_days)
        self._bound = asyncio.Lock()  # one eviction at a time in this process

    def path_of(self, sha256: str) -> Path:
        if not SHA256_PATTERN.match(sha256):
            raise ValueError("not a SHA-256")
        return self.folder / sha256[:2] / f"{sha256}.jpg"

    def _write(self, sha256: str, body: bytes) -> None:
        final = self.path_of(sha256)
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staged = final.parent / f".{sha256}.{secrets.token_hex(6)}.part"
        try:
            with staged.open("xb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(staged, final)
        finally:
            staged.unlink(missing_ok=True)

    async def put(self, device_id: str, sha256: str, body: bytes, now: datetime | None = None) -> bool:
        """Store `body` as image `sha256` uploaded by `device_id`: True if stored now, False if it
        was already held. SnapshotError 400 (not a JPEG), 422 (another SHA-256), 507 (the
        device's share is spent)."""
        if not is_jpeg(body):
            raise SnapshotError(400, "the body is not a JPEG image")
        if hashlib.sha256(body).hexdigest() != sha256:
            raise SnapshotError(422, "the body's SHA-256 is not the one in the path")
        if await held(sha256):
            return False
        used = await _bytes_of(device_id=device_id)
        if used + len(body) > self.device_max:
            raise SnapshotError(507, f"device {device_id!r} holds {used} bytes of snapshots; its share is "
                                     f"{self.device_max} bytes (FLEET_SNAPSHOT_DEVICE_MAX_MB)")
        await asyncio.to_thread(self._write, sha256, body)
        try:
            await Snapshot.create(sha256=sha256, bytes=len(body), type=MEDIA_TYPE, device_id=device_id,
                                  received_at=now or datetime.now(UTC))
        except IntegrityError:
            return False  # the same image, uploaded at the same moment by another request
        await self.fit(keep=sha256)
        return True

    async def fit(self, keep: str = "") -> int:
        """Delete the oldest images until the store is within FLEET_SNAPSHOT_STORE_MAX_MB (never
        `keep`); the number deleted."""
        async with self._bound:
            excess = await _bytes_of() - self.store_max
            deleted = 0
            while excess > 0:
                oldest = await Snapshot.exclude(sha256=keep).order_by("received_at", "sha256") \
                    .limit(PRUNE_BATCH).values_list("sha256", "bytes")
                if not oldest:
                    break
                doomed: list[str] = []
                for sha256, size in oldest:
                    if excess <= 0:
                        break
                    doomed.append(sha256)
                    excess -= size
                deleted += await self.delete(doomed)
            if deleted:
                log.info("snapshot store over FLEET_SNAPSHOT_STORE_MAX_MB: deleted the %d oldest images", deleted)
            return deleted

    async def delete(self, hashes: list[str]) -> int:
        """Delete images: their rows, then their files."""
        if not hashes:
            return 0
        count = await Snapshot.filter(sha256__in=hashes).delete()

        def unlink() -> None:
            for sha256 in hashes:
                self.path_of(sha256).unlink(missing_ok=True)

        await asyncio.to_thread(unlink)
        return count

    async def prune(self, now: datetime) -> tuple[int, bool]:
        """Delete images older than FLEET_RETENTION_SNAPSHOTS_DAYS, in bounded batches: (deleted,
        whether more remain for the next run)."""
        cutoff = now - self.keep
        deleted = 0
        for _ in range(PRUNE_BATCHES):
            old = await Snapshot.filter(received_at__lt=cutoff).order_by("received_at") \
                .limit(PRUNE_BATCH).values_list("sha256", flat=True)
            deleted += await self.delete([str(sha256) for sha256 in old])
            if len(old) < PRUNE_BATCH:
                return deleted, False
        return deleted, True
