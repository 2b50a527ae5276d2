"""The ingest loop: take a batch from the link, check it, store it; never die of a bad message.

Every stage contains its own failures: a message that breaks the check is refused, a batch the
database refuses is stored one by one, a reply that cannot be sent is logged. Whatever still
escapes a batch is logged (with a traceback the first time of each kind), counted in
`batch_errors`, and the loop takes the next batch. The supervisor (fleet/ingest/supervisor.py)
is the last line: it restarts the loop if it ends anyway.

Acknowledgement after commit: a batch's messages are acknowledged to the broker (in the order
received) once each is final: stored by the batch's committed transaction (a duplicate counts:
an earlier one stored it), or refused and recorded, or skipped. While the database is down the
batch waits and nothing is acknowledged: the broker holds the rest. A store that fails
unexpectedly (not the database being down, not one bad row) is tried BATCH_ATTEMPTS times,
then its messages are refused as `store_error` (recorded, counted) and acknowledged: the window
never jams and nothing goes without a trace. A failure after the commit (the replies) leaves the
batch final, and it is acknowledged. A batch cut short by the process's end (killed) is never
acknowledged: the broker sends it again, and dedupe drops what was stored. A loop that dies
holding a batch hands it to the loop the supervisor restarts (the broker would send it again
only on a new connection); after BATCH_ATTEMPTS such deaths it is refused as `store_error`.
"""

import asyncio
import dataclasses
import gc
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from contract import ContractError, Upstream, is_fleet_publish, parse_upstream
from fleet import db
from fleet.ingest import fastjson
from fleet.ingest.clock import offer_time
from fleet.ingest.link import MqttLink, RawMessage
from fleet.ingest.stats import IngestStats
from fleet.ingest.store import BatchResult, apply_batch
from fleet.models import RejectedMessage

if TYPE_CHECKING:
    from fleet.relay.routing import RouteTable
    from fleet.relay.service import RelayWorker

log = logging.getLogger(__name__)

RETAINED_SUFFIXES = ("/birth", "/death")
STORE_RETRY_MAX_S = 5.0  # backoff cap while the database is down (the queue holds the rest back)
BATCH_ATTEMPTS = 3  # a store that fails unexpectedly is tried this often, then refused as store_error
TRACEBACK_KINDS_MAX = 32  # distinct exception types logged with a traceback; the rest in one line
REFUSED_DETAIL = {"decommissioned": "device is decommissioned",
                  "replaced": "device was replaced on its asset (docs/assets.md)",
                  "store_error": "the database refused this message (see the fleet's log)"}


class Ingest:
    def __init__(self, link: MqttLink, stats: IngestStats, *, batch_max: int, batch_wait_ms: int,
                 rejected_keep: int, relay: "RelayWorker | None" = None) -> None:
        self.link = link
        self.relay = relay  # events matching a route get their deliveries in the batch's transaction
        self.stats = stats
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_ms / 1000
        self.rejected_keep = rejected_keep
        self.turned_at = time.monotonic()  # the loop's last turn, for /healthz: a stuck loop stops it
        self._traced: set[str] = set()
        # the batch taken and not yet acknowledged: a loop that dies holding it hands it to the
        # next one (the supervisor's restart), since the broker sends it again only on a new connection
        self._held: list[RawMessage] | None = None
        self._held_deaths = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set and the queue is drained (the link stops feeding it first)."""
        # What the process made to start (models, routes, settings) lives as long as it does: frozen,
        # the collector's full passes no longer walk it. They were ~20 % of a draining ingest's CPU,
        # set off by the objects each batch makes (benchmarks/ingest_rate.py --backlog).
        gc.collect()
        gc.freeze()
        while not (stop.is_set() and self.link.depth() == 0 and self._held is None):
            self.turned_at = time.monotonic()
            if self._held is not None:  # the last loop died holding it
                raw = self._held
                self._held_deaths += 1
                if self._held_deaths >= BATCH_ATTEMPTS:  # it kills the loop: refused, recorded, acknowledged
                    await self._record_rejects([self.stats.reject(m.topic, "store_error", REFUSED_DETAIL["store_error"],
                                                                  len(m.payload)) for m in raw])
                    self._release(raw)
                    continue
            else:
                raw = await self.link.take(self.batch_max, self.batch_wait_s)
                if not raw:
                    continue
                self._held, self._held_deaths = raw, 0
            started = time.perf_counter()
            try:
                await self.process(raw)
            except Exception as err:  # after the store (process contains the failures before it)
                self.stats.batch_errors += 1
                self.log_failure(f"a batch of {len(raw)} messages", err)
            self._release(raw)
            self.stats.batch_seconds.observe(time.perf_counter() - started)

    def _release(self, raw: list[RawMessage]) -> None:
        self.link.ack(raw)  # every message in it is final now
        self._held = None

    def log_failure(self, what: str, err: BaseException) -> None:
        """One line per failure; the traceback only the first time of each kind (no log floods)."""
        kind = type(err).__name__
        if kind in self._traced or len(self._traced) >= TRACEBACK_KINDS_MAX:
            log.error("ingest: %s failed (%s: %.200s); carrying on", what, kind, err)
        else:
            self._traced.add(kind)
            log.error("ingest: %s failed; carrying on", what, exc_info=err)

    def _check(self, message: RawMessage, rejects: list[dict[str, object]]) -> Upstream | None:
        """The checked message, or None when it is not stored (then it is counted here)."""
        if is_fleet_publish(message.topic):
            self.stats.skipped["own_publish"] += 1  # a command or desired state the fleet sent
            return None
        if not message.payload and message.topic.endswith(RETAINED_SUFFIXES):
            self.stats.skipped["retained_clear"] += 1  # an empty publish clears a retained topic
            return None
        try:
            checked = parse_upstream(message.topic, message.payload, loads=fastjson.loads)
        except ContractError as err:
            rejects.append(self.stats.reject(message.topic, err.reason, str(err), len(message.payload)))
            return None
        except Exception as err:  # a bug in the check must cost one message, not the ingest
            self.log_failure("checking a message", err)
            rejects.append(self.stats.reject(message.topic, "check_error", "the check failed (see the fleet's log)",
                                             len(message.payload)))
            return None
        return dataclasses.replace(checked, retained=True) if message.retain else checked

    async def process(self, raw: Sequence[RawMessage]) -> None:
        self.stats.received += len(raw)
        self.stats.last_message_at = datetime.now(UTC)
        rejects: list[dict[str, object]] = []
        checked = [msg for msg in (self._check(m, rejects) for m in raw) if msg is not None]
        result = await self._store_final(checked)
        if result.relayed and self.relay is not None:
            self.relay.nudge()  # after the commit: the worker sends what the batch queued
        for msg, reason in result.refused:
            rejects.append(self.stats.reject(msg.topic, reason, REFUSED_DETAIL.get(reason, reason), 0))
        self.stats.batches += 1
        self.stats.stored += result.stored
        self.stats.duplicates += result.duplicates
        self.stats.presence += result.presence
        self.stats.reserved += result.reserved
        self.stats.ota += result.ota
        self.stats.late += result.late
        self.stats.gaps_opened += result.gaps_opened
        refused = {msg.device_id for msg, _ in result.refused}
        fresh_births = [m for m in checked if m.kind == "birth" and not m.retained and m.device_id not in refused]
        if fresh_births:  # a connection just made
            await offer_time(self.link, fresh_births)
        if rejects:
            await self._record_rejects(rejects)

    def _routes(self) -> "RouteTable | None":
        return self.relay.routes if self.relay is not None else None

    async def _store_final(self, checked: list[Upstream]) -> BatchResult:
        """Store a batch, or refuse what cannot be stored: when this returns, every message of the
        batch is final (the acknowledgement follows). An unexpected failure is retried, then the
        batch is refused as `store_error`: nothing jams the broker's window, nothing goes uncounted."""
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                return await self._store(checked)
            except Exception as err:
                self.stats.batch_errors += 1
                self.log_failure(f"storing a batch of {len(checked)} (attempt {attempt} of {BATCH_ATTEMPTS})", err)
        return BatchResult(refused=[(msg, "store_error") for msg in checked])

    async def _store(self, checked: list[Upstream]) -> BatchResult:
        """Store a batch; while the database is down, wait and retry the same batch.

        If the database answers but the batch fails, one message is at fault: store them one by
        one and refuse the ones that fail (reason `store_error`), so one bad row never blocks the rest.
        """
        delay = 0.2
        while True:
            try:
                return await apply_batch(checked, routes=self._routes())
            except Exception as err:
                if await db.ping():
                    self.log_failure(f"storing a batch of {len(checked)} (retrying one by one)", err)
                    return await self._store_singly(checked)
                self.stats.store_retries += 1
                log.warning("database not answering (%s); retrying in %.1fs", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX_S)

    async def _store_singly(self, checked: list[Upstream]) -> BatchResult:
        total = BatchResult()
        for msg in checked:
            try:
                one = await apply_batch([msg], routes=self._routes())
            except Exception as err:
                self.log_failure(f"storing one message from {msg.device_id}", err)
                total.refused.append((msg, "store_error"))
                continue
            total.stored += one.stored
            total.duplicates += one.duplicates
            total.presence += one.presence
            total.reserved += one.reserved
            total.ota += one.ota
            total.late += one.late
            total.gaps_opened += one.gaps_opened
            total.relayed += one.relayed
            total.refused.extend(one.refused)
        return total

    async def _record_rejects(self, rejects: list[dict[str, object]]) -> None:
        """Keep the newest `rejected_keep` rejects in the database (bounded; idempotent pruning)."""
        try:
            await RejectedMessage.bulk_create([RejectedMessage(**r) for r in rejects])
            newest = await RejectedMessage.all().order_by("-id").offset(self.rejected_keep).first()
            if newest is not None:
                await RejectedMessage.filter(id__lte=newest.id).delete()
        except Exception as err:
            self.log_failure(f"recording {len(rejects)} rejected messages", err)
