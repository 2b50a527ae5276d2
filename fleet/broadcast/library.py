"""The audio library: clips made from uploads or text, one variant per speaker kind, stored by
content hash within a budget, and the speakers' download tokens (docs/broadcasts.md).

Layout under FLEET_AUDIO_DIR: `files/<first 2 hex>/<sha256>.wav` (a file is written whole under
`tmp/`, fsynced, then renamed: a crash never leaves a wrong file under a hash; files in `tmp/`
older than an hour are removed when the library starts) and `token.key` (the download tokens'
secret, unless configured).
"""

import asyncio
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from fleet.auth.url_tokens import Grant, UrlTokenError, check_token, load_secret, make_token
from fleet.broadcast.audio_tools import (
    FORMATS,
    TTS_VOICES,
    AudioError,
    AudioRefused,
    AudioUnavailable,
    Probe,
    Variant,
    check_duration,
    normalise,
    probe,
    speak,
)
from fleet.broadcast.models import Clip, ClipFile
from fleet.files import fsync_path, hash_file
from fleet.models import Device, DeviceStatus
from fleet.settings import Settings

TOKEN_DOMAIN = "ioc-audio-download"
JOBS_AT_ONCE = 2  # ffmpeg jobs (uploads, text-to-speech) running at once in this process
JOBS_WAITING = 8  # more waiting than this: 503, the library is busy
TEXT_MAX = 2000
TMP_KEEP_S = 3600  # files in tmp/ older than this when the library starts are a crash's leftovers


class AudioConflict(AudioError):
    """The library's state refuses it: the same audio is already there, it is full, the clip is in use."""

    status = 409


class DownloadRefused(AudioError):
    """A speaker's download the fleet does not serve: 403 (the token) or 404 (no such file)."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


@dataclass(frozen=True, slots=True)
class Usage:
    used_bytes: int
    budget_bytes: int
    clips: int


def check_text(text: str) -> str:
    stripped = text.strip()
    if not stripped:
        raise AudioRefused("the text is empty")
    if len(stripped) > TEXT_MAX:
        raise AudioRefused(f"the text is longer than {TEXT_MAX} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in stripped):
        raise AudioRefused("the text holds control characters")
    return stripped


def speech_sha256(text: str, voice: str) -> str:
    """A text-to-speech clip's source hash (the same text in the same voice is the same clip); `text` as
    check_text returns it."""
    return hashlib.sha256(b"\0".join((b"tts", voice.encode(), text.encode()))).hexdigest()


class Library:
    def __init__(self, settings: Settings) -> None:
        self.root = settings.audio_dir
        self.budget_bytes = settings.audio_budget_mb * 1024 * 1024
        self.max_s = settings.audio_max_s
        self.target_lufs = settings.audio_target_lufs
        self.timeout_s = settings.audio_ffmpeg_timeout_s
        self.token_ttl_s = settings.audio_token_ttl_s
        self.tmp = self.root / "tmp"
        self.files = self.root / "files"
        for folder in (self.tmp, self.files):
            folder.mkdir(parents=True, exist_ok=True)
        # a crash's half-written files; recent ones may be another fleet process's uploads in progress
        stale_before = time.time() - TMP_KEEP_S
        for leftover in self.tmp.iterdir():
            if leftover.stat().st_mtime < stale_before:
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        self.secret = load_secret(settings.audio_token_secret, self.root)
        self._jobs = asyncio.Semaphore(JOBS_AT_ONCE)
        self._waiting = 0
        self._store_lock = asyncio.Lock()  # the budget check and the store, one clip at a time

    # -- files ---------------------------------------------------------------------------------

    def temp_path(self, suffix: str = "") -> Path:
        return self.tmp / f"{secrets.token_hex(12)}{suffix}"

    def path_of(self, sha256: str) -> Path:
        return self.files / sha256[:2] / f"{sha256}.wav"

    async def usage(self) -> Usage:
        row = await ClipFile.annotate(total=Sum("bytes")).first().values("total")
        used = int((row or {}).get("total") or 0)
        return Usage(used, self.budget_bytes, await Clip.filter(deleted_at__isnull=True).count())

    # -- adding clips --------------------------------------------------------------------------

    async def add_upload(self, upload: Path, title: str, actor: str) -> Clip:
        """A clip from an uploaded file (which this call removes). AudioError subclasses refuse it."""
        try:
            size = (await asyncio.to_thread(upload.stat)).st_size
            if size == 0:
                raise AudioRefused("the file is empty")
            source_sha256, _ = await asyncio.to_thread(hash_file, upload)
            await self._refuse_duplicate(source_sha256)
            async with self._job():
                probed = await probe(upload, self.timeout_s)
                check_duration(probed.duration_s, self.max_s)
                variants = await self._variants(upload, probed)
            return await self._store(variants, title=title, source="upload", source_sha256=source_sha256,
                                     source_format=probed.label, source_bytes=size, actor=actor)
        finally:
            await asyncio.to_thread(upload.unlink, missing_ok=True)

    async def add_speech(self, text: str, voice: str, title: str, actor: str) -> Clip:
        """A clip spoken by espeak-ng from the text, stored like any clip."""
        text = check_text(text)
        if voice not in TTS_VOICES:
            raise AudioRefused(f"voice: one of {', '.join(sorted(TTS_VOICES))}")
        source_sha256 = speech_sha256(text, voice)
        await self._refuse_duplicate(source_sha256)
        spoken = self.temp_path(".wav")
        try:
            async with self._job():
                await speak(text, voice, spoken, self.timeout_s)
                probed = await probe(spoken, self.timeout_s)
                check_duration(probed.duration_s, self.max_s)
                variants = await self._variants(spoken, probed)
            return await self._store(variants, title=title, source="tts", source_sha256=source_sha256,
                                     source_format="TTS", source_bytes=len(text.encode()), actor=actor,
                                     text=text, voice=voice)
        finally:
            spoken.unlink(missing_ok=True)

    async def _refuse_duplicate(self, source_sha256: str) -> None:
        existing = await Clip.filter(source_sha256=source_sha256, deleted_at__isnull=True).first()
        if existing is not None:
            raise AudioConflict(f"this audio is already in the library as clip {existing.id}")

    def _job(self) -> "_Job":
        if self._waiting >= JOBS_AT_ONCE + JOBS_WAITING:
            raise AudioUnavailable("the audio library is busy with other clips: try again in a minute")
        return _Job(self)

    async def _variants(self, source: Path, probed: Probe) -> list[Variant]:
        outs = [self.temp_path(".wav") for _ in FORMATS]
        try:
            return list(await asyncio.gather(*(
                normalise(source, out, fmt, probed, self.target_lufs, self.timeout_s)
                for out, fmt in zip(outs, FORMATS, strict=True))))
        except BaseException:
            for out in outs:
                out.unlink(missing_ok=True)
            raise

    async def _store(self, variants: Sequence[Variant], *, title: str, source: str, source_sha256: str,
                     source_format: str, source_bytes: int, actor: str, text: str | None = None,
                     voice: str | None = None) -> Clip:
        try:
            hashed = [await asyncio.to_thread(hash_file, v.path) for v in variants]
            async with self._store_lock:
                await self._refuse_duplicate(source_sha256)
                usage = await self.usage()
                adding = sum(size for _, size in hashed)
                if usage.used_bytes + adding > self.budget_bytes:
                    mb = 1024 * 1024
                    raise AudioConflict(
                        f"the audio library is full: {usage.used_bytes / mb:.1f} MB used of "
                        f"{self.budget_bytes / mb:.0f} MB (FLEET_AUDIO_BUDGET_MB), this clip needs "
                        f"{adding / mb:.1f} MB; delete clips first")
                for variant, (sha256, _) in zip(variants, hashed, strict=True):
                    await asyncio.to_thread(self._place, variant.path, sha256)
                async with in_transaction():
                    clip = await Clip.create(title=title, source=source, source_sha256=source_sha256,
                                             source_format=source_format, source_bytes=source_bytes, text=text,
                                             voice=voice, duration_ms=max(v.duration_ms for v in variants),
                                             created_by=actor)
                    for variant, (sha256, size) in zip(variants, hashed, strict=True):
                        await ClipFile.create(clip=clip, kind=variant.kind, sha256=sha256, bytes=size,
                                              sample_rate=variant.sample_rate, duration_ms=variant.duration_ms,
                                              loudness_lufs=variant.loudness.integrated_lufs,
                                              true_peak_dbtp=variant.loudness.true_peak_dbtp)
                return clip
        finally:
            for variant in variants:
                variant.path.unlink(missing_ok=True)

    def _place(self, staged: Path, sha256: str) -> None:
        final = self.path_of(sha256)
        if final.exists():
            return
        final.parent.mkdir(exist_ok=True)
        fsync_path(staged)
        os.replace(staged, final)
        fsync_path(final.parent)

    # -- deleting ------------------------------------------------------------------------------

    async def delete(self, clip: Clip, in_use_by: Sequence[int], actor: str) -> None:
        """Remove a clip's files (AudioConflict while broadcasts `in_use_by` will still play it).

        The row stays, marked deleted, as the history of the broadcasts that played it."""
        if in_use_by:
            shown = ", ".join(str(i) for i in list(in_use_by)[:10])
            raise AudioConflict(f"clip {clip.id} is used by broadcast(s) {shown} that will still play: "
                                "cancel them first")
        async with self._store_lock:
            files = list(await ClipFile.filter(clip_id=clip.id).values_list("sha256", flat=True))
            async with in_transaction():
                await ClipFile.filter(clip_id=clip.id).delete()
                clip.deleted_at = datetime.now(UTC)
                clip.deleted_by = actor
                await clip.save()
            for sha256 in files:
                if not await ClipFile.filter(sha256=sha256).exists():
                    self.path_of(str(sha256)).unlink(missing_ok=True)

    # -- the speakers' downloads ---------------------------------------------------------------

    def token(self, device_id: str, sha256: str, now_s: float | None = None) -> tuple[str, int]:
        """A download token for one device and one file, and its expiry (Unix s)."""
        expires = int(time.time() if now_s is None else now_s) + self.token_ttl_s
        return make_token(self.secret, TOKEN_DOMAIN, device_id, sha256, expires), expires

    async def authorize(self, token: str | None, sha256: str, now_s: float | None = None) -> Path:
        """The file a token may fetch: DownloadRefused 403 (the token) or 404 (no such file)."""
        if not token:
            raise DownloadRefused(403, "a download needs its token: ?t=<token>")
        try:
            grant: Grant = check_token(self.secret, TOKEN_DOMAIN, token, time.time() if now_s is None else now_s)
        except UrlTokenError as err:
            raise DownloadRefused(403, str(err)) from err
        if grant.subject != sha256:
            raise DownloadRefused(403, "the token is for another file")
        device = await Device.get_or_none(id=grant.device_id)
        if device is None or device.status == DeviceStatus.DECOMMISSIONED:
            raise DownloadRefused(403, "the token's device is not registered or is decommissioned")
        path = self.path_of(sha256)
        if not await ClipFile.filter(sha256=sha256).exists() or not path.is_file():
            raise DownloadRefused(404, "no such clip file")
        return path


class _Job:
    """One place among the library's ffmpeg jobs (a bounded wait)."""

    def __init__(self, library: Library) -> None:
        self.library = library

    async def __aenter__(self) -> None:
        self.library._waiting += 1
        try:
            await self.library._jobs.acquire()
        except BaseException:
            self.library._waiting -= 1
            raise

    async def __aexit__(self, *_: object) -> None:
        self.library._jobs.release()
        self.library._waiting -= 1
