"""The ingest loop: take a batch from the link, check it, store it; never die of a bad message."""

import asyncio
import logging
from collections.abc import Sequence

from fleet import db
from fleet.contract import ContractError, Upstream, parse_upstream
from fleet.ingest.clock import offer_time
from fleet.ingest.link import MqttLink, RawMessage
from fleet.ingest.stats import IngestStats
from fleet.ingest.store import BatchResult, apply_batch
from fleet.models import RejectedMessage

log = logging.getLogger(__name__)

RETAINED_SUFFIXES = ("/birth", "/death")
STORE_RETRY_MAX_S = 5.0  # backoff cap while the database is down (the queue holds the rest back)


class Ingest:
    def __init__(self, link: MqttLink, stats: IngestStats, *, batch_max: int, batch_wait_ms: int,
                 rejected_keep: int) -> None:
        self.link = link
        self.stats = stats
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_ms / 1000
        self.rejected_keep = rejected_keep

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set and the queue is drained (the link stops feeding it first)."""
        while not (stop.is_set() and self.link.depth() == 0):
            raw = await self.link.take(self.batch_max, self.batch_wait_s)
            if raw:
                await self.process(raw)

    async def process(self, raw: Sequence[RawMessage]) -> None:
        self.stats.received += len(raw)
        checked: list[Upstream] = []
        fresh_births: list[Upstream] = []
        rejects: list[dict[str, object]] = []
        for message in raw:
            if not message.payload and message.topic.endswith(RETAINED_SUFFIXES):
                continue  # an empty publish clears a retained topic: nothing to store
            try:
                checked.append(parse_upstream(message.topic, message.payload))
                if checked[-1].kind == "birth" and not message.retain:  # a connection just made
                    fresh_births.append(checked[-1])
            except ContractError as err:
                rejects.append(self.stats.reject(message.topic, err.reason, str(err), len(message.payload)))
        result = await self._store(checked)
        if fresh_births:
            refused = {msg.device_id for msg, _ in result.refused}
            await offer_time(self.link, [m for m in fresh_births if m.device_id not in refused])
        for msg, reason in result.refused:
            rejects.append(self.stats.reject(msg.topic, reason,
                                             "device is decommissioned", 0))
        self.stats.batches += 1
        self.stats.stored += result.stored
        self.stats.duplicates += result.duplicates
        self.stats.late += result.late
        self.stats.gaps_opened += result.gaps_opened
        if rejects:
            await self._record_rejects(rejects)

    async def _store(self, checked: list[Upstream]) -> BatchResult:
        """Store a batch; while the database is down, wait and retry the same batch.

        If the database answers but the batch fails, one message is at fault: store them one by
        one and refuse the ones that fail (reason `store_error`), so one bad row never blocks the rest.
        """
        delay = 0.2
        while True:
            try:
                return await apply_batch(checked)
            except Exception as err:
                if await db.ping():
                    log.exception("a batch of %d failed to store; retrying one by one", len(checked))
                    return await self._store_singly(checked)
                self.stats.store_retries += 1
                log.warning("database not answering (%s); retrying in %.1fs", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX_S)

    async def _store_singly(self, checked: list[Upstream]) -> BatchResult:
        total = BatchResult()
        for msg in checked:
            try:
                one = await apply_batch([msg])
            except Exception as err:
                self.stats.reject(msg.topic, "store_error", str(err), 0)
                continue
            total.stored += one.stored
            total.duplicates += one.duplicates
            total.late += one.late
            total.gaps_opened += one.gaps_opened
            total.refused.extend(one.refused)
        return total

    async def _record_rejects(self, rejects: list[dict[str, object]]) -> None:
        """Keep the newest `rejected_keep` rejects in the database (bounded; idempotent pruning)."""
        try:
            await RejectedMessage.bulk_create([RejectedMessage(**r) for r in rejects])
            newest = await RejectedMessage.all().order_by("-id").offset(self.rejected_keep).first()
            if newest is not None:
                await RejectedMessage.filter(id__lte=newest.id).delete()
        except Exception:
            log.exception("could not record %d rejected messages", len(rejects))


