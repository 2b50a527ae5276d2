"""Clips to the speakers (docs/broadcasts.md, "Clips before their first occurrence").

Delivery makes a SpeakerClip row `wanted` for every clip of a speaker's document. This part's tick
sends each wanted clip to its online speaker as a `speaker.clip_fetch {"name", "url", "sha256",
"bytes"}` command (recorded in the Command table), the URL `FLEET_PUBLIC_URL/audio/files/<sha256>?t=
<token>` with a fresh download token for that device and file; `observe` matches the answers.

A row's life: `wanted` → `sent` (a command in flight, `command_id`) → `ready` (answer ok) or back to
`wanted` for a retry, or `failed` (a final answer, or the attempts spent). Policy:
- at most one clip_fetch in flight per speaker (the ESP32 keeps one pending download and blocks its
  loop while it runs; the Pi runs its commands one at a time) and at most SENDS_PER_TICK per tick;
- no answer within ANSWER_WAIT_S of the send, or an answer that may pass (download failed,
  checksum mismatch, HTTP …, expired): a failed attempt; the next try after RETRY_FIRST_S, doubled
  at each failed attempt up to RETRY_MAX_S, and only while the speaker is online (a speaker that
  went offline meanwhile does not lose an attempt: it is sent again once it is back);
- after MAX_ATTEMPTS failed attempts the row is `failed` ("gave up after N attempts: …"); its
  receipts are left as they are (the node reports `no clip` at the occurrence if it still lacks it,
  and a Pi keeps fetching the clips of its desired state by itself);
- a final answer (`over budget`, a clip larger than the Pi's cache, a refused command, the node
  does not know the command) or a file the library no longer has: `failed` at once, and the
  device's receipts of entries playing that clip are `failed` with that reason;
- the speaker's next birth puts its `failed` rows back to `wanted` with their attempts at zero (a
  reboot may have cured a download; an operator may have freed an ESP32's flash), but for the
  https refusal below;
- an ESP32 downloads `http://` only: with an `https://` FLEET_PUBLIC_URL its rows are `failed`
  with a reason saying so (and an error logged); they are put back to `wanted` by the first tick
  of a fleet whose public URL is plain HTTP.
On `ready`, the device's receipts of entries with that clip move to `clip_ready`; receipts made
later for a clip a speaker already holds are moved by the tick (`_catch_up`, a cursor over the
receipts before clip_ready that starts again from the first when it reaches the last).
"""

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q

from contract import ContractError, Upstream, make_command
from fleet.broadcast.library import Library
from fleet.broadcast.models import BroadcastReceipt, ClipFile, ReceiptState, SpeakerClip
from fleet.broadcast.receipts import advance, earlier_than
from fleet.ingest.link import LinkError, MqttLink
from fleet.models import Command, Device, DeviceStatus
from fleet.settings import Settings

log = logging.getLogger(__name__)

CLIP_FETCH = "speaker.clip_fetch"
FETCH_EXPIRY_S = 60  # the command's `exp`: a node that gets it later answers `expired` (a retry)
ANSWER_WAIT_S = 90  # no answer by then: a failed attempt (ESP32: 10 s per socket step; Pi: 25 s)
RETRY_FIRST_S = 30
RETRY_MAX_S = 1800
MAX_ATTEMPTS = 8  # 30 s, 1, 2, 4, 8, 16, 30, 30 min apart: about 1.5 h of trying while online
SENDS_PER_TICK = 100
PUBLISH_CONCURRENCY = 100  # as the OTA engine: the link allows 100 publishes in flight
CATCH_UP_PER_TICK = 500  # receipts before clip_ready looked at per tick for a clip already ready
REASON_MAX = 200
# what a node answers when retrying cannot help (firmware/app_a/roles/speaker.py, clip_fetch.py;
# edge/roles/speaker.py, speaker_cache.py)
FINAL_PREFIXES = ("over budget", "clip of ", "name:", "clip name:", "needs ", "only http://", "sha256:")
HTTPS_REFUSED = "refused: the ESP32 downloads http:// only and FLEET_PUBLIC_URL is https://"

WANTED, SENT, READY, FAILED = "wanted", "sent", "ready", "failed"


def clip_name(sha256: str) -> str:
    """The clip's name on a node: `c` + the first 24 hex digits of the variant's SHA-256."""
    return "c" + sha256[:24]


def retry_delay(attempts: int) -> timedelta:
    """The wait before the next try after `attempts` failed ones (1, 2, …)."""
    return timedelta(seconds=min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** max(0, attempts - 1)))


def is_final(detail: str) -> bool:
    return detail.startswith(FINAL_PREFIXES)


def detail_text(detail: Any) -> str:
    if isinstance(detail, str):
        return detail[:REASON_MAX]
    if isinstance(detail, dict):
        for key in ("msg", "error", "reason"):
            if isinstance(detail.get(key), str):
                return str(detail[key])[:REASON_MAX]
    return "" if detail is None else str(detail)[:REASON_MAX]


@dataclass(frozen=True, slots=True)
class Send:
    """One command to publish: the row it is for, and its topic and payload."""

    key: int
    topic: str
    payload: bytes


async def publish_all(link: MqttLink, sends: Sequence[Send]) -> set[int]:
    """Publish each command (QoS 1) concurrently, at most PUBLISH_CONCURRENCY awaiting their PUBACK;
    the keys that went out. A link that is down stops the rest."""
    gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)
    done: set[int] = set()
    down = False

    async def one(send: Send) -> None:
        nonlocal down
        async with gate:
            if down:
                return
            try:
                await link.publish(send.topic, send.payload)
            except LinkError as err:
                if not down:
                    log.warning("broadcasts: publishing commands stopped: %s", err)
                down = True
                return
            done.add(send.key)

    await asyncio.gather(*(one(s) for s in sends))
    return done


def command(device_id: str, name: str, args: dict[str, Any], now: datetime, ttl_s: float,
            recorded_args: dict[str, Any] | None = None) -> tuple[Command, str, bytes]:
    """A command's row (not saved) and its (topic, payload); ContractError if it breaks the contract."""
    command_id = uuid.uuid4().hex
    expires_ms = int(now.timestamp() * 1000 + ttl_s * 1000)
    topic, payload = make_command(device_id, command_id, name, args, expires_ms)
    row = Command(id=command_id, device_id=device_id, name=name,
                  args=args if recorded_args is None else recorded_args, expires_ms=expires_ms)
    return row, topic, payload


async def receipts_to(device_id: str, sha256: str, state: ReceiptState, *, conn: BaseDBAsyncClient | None = None,
                      **fields: Any) -> int:
    """Move the device's receipts of entries whose broadcast plays the clip of this variant."""
    files = ClipFile.filter(sha256=sha256)
    query = BroadcastReceipt.filter(device_id=device_id, state__in=earlier_than(state))
    if conn is not None:
        files, query = files.using_db(conn), query.using_db(conn)
    clip_ids = [int(r[0]) for r in await files.values_list("clip_id")]
    if not clip_ids:
        return 0
    entries = [str(r[0]) for r in await query.filter(broadcast__clip_id__in=clip_ids).values_list("entry_id")]
    return await advance(device_id, entries, state, conn=conn, **fields)


class ClipSender:
    """The clip fetches of every speaker: `tick(now)` on the broadcasts worker."""

    def __init__(self, link: MqttLink, settings: Settings) -> None:
        self.link = link
        self.settings = settings
        self.base_url = settings.public_base_url()
        self._library: Library | None = None
        self._receipts_seen = 0  # _catch_up's cursor: it goes on above this receipt id
        self._https_cleared = False
        self.sent = 0  # commands that went out (for tests and a page)

    @property
    def library(self) -> Library:
        """The download tokens' maker (the library's secret: FLEET_AUDIO_TOKEN_SECRET or token.key)."""
        if self._library is None:
            self._library = Library(self.settings)
        return self._library

    def url(self, device_id: str, sha256: str, now: datetime) -> tuple[str, str]:
        """(the URL with its token, the same URL with the token left out for the record)."""
        token, _ = self.library.token(device_id, sha256, now.timestamp())
        bare = f"{self.base_url}/audio/files/{sha256}"
        return f"{bare}?t={token}", f"{bare}?t=…"

    # -- the tick ------------------------------------------------------------------------------

    async def tick(self, now: datetime) -> None:
        await self._clear_https_refusals()
        await self._timeouts(now)
        await self.send_due(now)
        await self._catch_up(now)

    async def _clear_https_refusals(self) -> None:
        if self._https_cleared:
            return
        self._https_cleared = True
        if not self.base_url.startswith("https://"):
            await SpeakerClip.filter(state=FAILED, reason=HTTPS_REFUSED).update(
                state=WANTED, reason=None, attempts=0, next_try_at=None)

    async def _timeouts(self, now: datetime) -> None:
        """Commands in flight with no answer by their deadline: a failed attempt if the speaker is
        online, else sent again once it is back (no attempt lost)."""
        late = await SpeakerClip.filter(state=SENT, next_try_at__lte=now).limit(SENDS_PER_TICK)
        if not late:
            return
        online = await _online({r.device_id for r in late})
        for row in late:
            if row.device_id in online:
                await failed_attempt(row, f"no answer within {ANSWER_WAIT_S} s", now)
            else:
                await SpeakerClip.filter(id=row.id, state=SENT, command_id=row.command_id).update(
                    state=WANTED, command_id=None, next_try_at=now)

    async def send_due(self, now: datetime, *, first: Iterable[int] = ()) -> int:
        """Send the wanted clips that are due to their online speakers, those of `first` (row ids:
        an emergency waits on them) before the others; returns how many went out."""
        busy = {str(r[0]) for r in await SpeakerClip.filter(state=SENT).values_list("device_id")}
        picked: list[SpeakerClip] = []
        urgent = list(first)
        if urgent:
            picked = list(await SpeakerClip.filter(id__in=urgent, state=WANTED))
        # null: a row delivery just made, due at once (NOT (NULL > now) would leave it out)
        rest = SpeakerClip.filter(Q(next_try_at__isnull=True) | Q(next_try_at__lte=now), state=WANTED).order_by(
            "next_try_at", "id")
        if busy:
            rest = rest.exclude(device_id__in=list(busy))
        picked += [r for r in await rest.limit(SENDS_PER_TICK * 2) if r.id not in urgent]
        if not picked:
            return 0
        devices = {d.id: d for d in await Device.filter(id__in=list({r.device_id for r in picked})).only(
            "id", "kind", "online", "status")}
        files = {str(r[0]) for r in await ClipFile.filter(sha256__in=list({r.sha256 for r in picked})).values_list(
            "sha256")}
        chosen: list[SpeakerClip] = []
        for row in picked:
            device = devices.get(row.device_id)
            if device is None or device.status == DeviceStatus.DECOMMISSIONED or not device.online:
                continue
            if row.device_id in busy or len(chosen) >= SENDS_PER_TICK:
                continue
            if row.sha256 not in files:
                await self._final(row, "the clip is no longer in the audio library", now)
                continue
            if device.kind == "esp32" and self.base_url.startswith("https://"):
                log.error("speaker %s: clip %s not sent: %s", row.device_id, row.name, HTTPS_REFUSED)
                await self._final(row, HTTPS_REFUSED, now)
                continue
            busy.add(row.device_id)
            chosen.append(row)
        return await self._send(chosen, now)

    async def _send(self, rows: Sequence[SpeakerClip], now: datetime) -> int:
        commands: list[Command] = []
        sends: list[Send] = []
        for row in rows:
            url, recorded = self.url(row.device_id, row.sha256, now)
            args = {"name": row.name, "url": url, "sha256": row.sha256, "bytes": row.bytes}
            try:
                cmd, topic, payload = command(row.device_id, CLIP_FETCH, args, now, FETCH_EXPIRY_S,
                                              {**args, "url": recorded})
            except ContractError as err:
                await self._final(row, f"refused: {err}", now)
                continue
            # claimed by state: a second fleet instance sending the same row at once finds it sent
            claimed = await SpeakerClip.filter(id=row.id, state=WANTED).update(
                state=SENT, command_id=cmd.id, next_try_at=now + timedelta(seconds=ANSWER_WAIT_S))
            if not claimed:
                continue
            commands.append(cmd)
            sends.append(Send(row.id, topic, payload))
        if not sends:
            return 0
        await Command.bulk_create(commands)
        done = await publish_all(self.link, sends)
        unsent = [s.key for s in sends if s.key not in done]
        if unsent:  # the link is down: not an attempt; tried again at a later tick
            ids = [c.id for c, s in zip(commands, sends, strict=True) if s.key not in done]
            await Command.filter(id__in=ids).update(status="unsent")
            await SpeakerClip.filter(id__in=unsent, state=SENT).update(
                state=WANTED, command_id=None, next_try_at=now + timedelta(seconds=RETRY_FIRST_S))
        self.sent += len(done)
        return len(done)

    async def _final(self, row: SpeakerClip, reason: str, now: datetime, conn: BaseDBAsyncClient | None = None) -> None:
        await finalise(row.device_id, row.id, row.sha256, reason, conn=conn)

    async def _catch_up(self, now: datetime) -> None:
        """Receipts still before clip_ready for a clip their speaker already holds: clip_ready.
        Looked at CATCH_UP_PER_TICK at a time in id order from a cursor that starts again at the
        first when it reaches the last, so a receipt whose transaction committed after a later id
        had been seen (another instance, a slow delivery) is still reached on the next pass."""
        rows = await (BroadcastReceipt.filter(id__gt=self._receipts_seen,
                                              state__in=[ReceiptState.PENDING, ReceiptState.DELIVERED])
                      .order_by("id").limit(CATCH_UP_PER_TICK).values_list("id", "device_id", "broadcast__clip_id"))
        self._receipts_seen = max(int(r[0]) for r in rows) if len(rows) == CATCH_UP_PER_TICK else 0
        if not rows:
            return
        ready = await SpeakerClip.filter(device_id__in=list({str(r[1]) for r in rows}), state=READY).values_list(
            "device_id", "sha256")
        if not ready:
            return
        by_sha = {str(r[0]): int(r[1]) for r in await ClipFile.filter(
            sha256__in=list({str(s) for _, s in ready})).values_list("sha256", "clip_id")}
        held = {(str(d), by_sha[str(s)]) for d, s in ready if str(s) in by_sha}
        for receipt_id, device_id, clip_id in rows:
            if (str(device_id), int(clip_id)) in held:
                await BroadcastReceipt.filter(id=receipt_id, state__in=earlier_than(ReceiptState.CLIP_READY)).update(
                    state=ReceiptState.CLIP_READY, clip_ready_at=now)


async def failed_attempt(row: SpeakerClip, reason: str, now: datetime,
                         conn: BaseDBAsyncClient | None = None) -> None:
    """One more failed attempt: `wanted` again after the growing delay, or `failed` at the bound."""
    attempts = row.attempts + 1
    query = SpeakerClip.filter(id=row.id, state=SENT, command_id=row.command_id)
    if conn is not None:
        query = query.using_db(conn)
    if attempts >= MAX_ATTEMPTS:
        await query.update(state=FAILED, command_id=None, attempts=attempts, next_try_at=None,
                           reason=f"gave up after {attempts} attempts: {reason}"[:REASON_MAX])
        log.warning("speaker %s: clip %s not fetched after %d attempts: %s", row.device_id, row.name,
                    attempts, reason)
    else:
        await query.update(state=WANTED, command_id=None, attempts=attempts, reason=reason[:REASON_MAX],
                           next_try_at=now + retry_delay(attempts))


async def finalise(device_id: str, row_id: int, sha256: str, reason: str, *,
                   conn: BaseDBAsyncClient | None = None) -> None:
    """A clip the speaker will not get: the row `failed` and its receipts `failed` with the reason."""
    query = SpeakerClip.filter(id=row_id)
    if conn is not None:
        query = query.using_db(conn)
    await query.update(state=FAILED, command_id=None, next_try_at=None, reason=reason[:REASON_MAX])
    await receipts_to(device_id, sha256, ReceiptState.FAILED, conn=conn, reason=reason[:REASON_MAX])


async def _online(device_ids: set[str]) -> set[str]:
    if not device_ids:
        return set()
    return {str(r[0]) for r in await Device.filter(id__in=list(device_ids), online=True).exclude(
        status=DeviceStatus.DECOMMISSIONED).values_list("id")}


async def want(device_id: str, sha256: str, size: int, now: datetime) -> SpeakerClip:
    """The speaker's row for this variant, made `wanted` (due now) if it has none; a row that gave
    up or failed is asked again."""
    row, made = await SpeakerClip.get_or_create(
        device_id=device_id, name=clip_name(sha256),
        defaults={"sha256": sha256, "bytes": size, "state": WANTED, "next_try_at": now})
    if not made and row.state == FAILED and row.reason != HTTPS_REFUSED and not is_final(row.reason or ""):
        await SpeakerClip.filter(id=row.id, state=FAILED).update(state=WANTED, attempts=0, next_try_at=now)
        await row.refresh_from_db()
    return row


# -- answers, from the ingest (fleet/broadcast/ingest_hook.py) -------------------------------------


async def observe(conn: BaseDBAsyncClient, batch: Sequence[Upstream], now: datetime) -> bool:
    """clip_fetch answers → ready / retry / failed; a speaker's birth → its commands in flight are
    sent again and its failed rows are tried afresh. True when a row became ready (an
    emergency may be waiting on it)."""
    answers = {str(m.body.get("id")): m for m in batch if m.kind == "cmd_result"}
    born = {m.device_id for m in batch if m.kind == "birth"}
    became_ready = False
    if answers:
        rows = await SpeakerClip.filter(command_id__in=list(answers)).using_db(conn)
        for row in rows:
            msg = answers[str(row.command_id)]
            if msg.device_id != row.device_id:
                continue
            try:
                became_ready |= await _answer(conn, row, msg, now)
            except Exception as err:  # one answer must not cost the batch
                log.error("clip answer from %s not applied (%s: %.200s)", row.device_id, type(err).__name__, err)
    if born:
        try:
            # a reborn node lost the download it had in flight
            await SpeakerClip.filter(device_id__in=list(born), state=SENT).using_db(conn).update(
                state=WANTED, command_id=None, next_try_at=now)
            # and rows that failed are asked again: a reboot may have cured a download, an operator
            # may have freed the flash of an ESP32 that was over budget (the https refusal stays)
            await SpeakerClip.filter(device_id__in=list(born), state=FAILED).exclude(
                reason=HTTPS_REFUSED).using_db(conn).update(state=WANTED, attempts=0, next_try_at=now)
        except Exception as err:
            log.error("clip rows of reborn speakers not reset (%s: %.200s)", type(err).__name__, err)
    return became_ready


async def _answer(conn: BaseDBAsyncClient, row: SpeakerClip, msg: Upstream, now: datetime) -> bool:
    status = msg.body.get("status")
    detail = detail_text(msg.body.get("detail"))
    if status == "ok":
        await SpeakerClip.filter(id=row.id).using_db(conn).update(
            state=READY, command_id=None, next_try_at=None, reason=None)
        await receipts_to(row.device_id, row.sha256, ReceiptState.CLIP_READY, conn=conn, clip_ready_at=now)
        return True
    if status == "unknown":
        await finalise(row.device_id, row.id, row.sha256, f"the speaker does not know {CLIP_FETCH}", conn=conn)
    elif status == "error" and is_final(detail):
        await finalise(row.device_id, row.id, row.sha256, detail, conn=conn)
    else:  # error that may pass, or expired
        await failed_attempt(row, detail or str(status), now, conn)
    return False
