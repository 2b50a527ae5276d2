"""Counters of what the ingest did, for the API, the status page and Prometheus (fleet/ops/metrics.py).

Every message taken from the broker lands in exactly one of: `stored`, `duplicates`,
`presence`, `ota`, `reserved`, `skipped` (by why), `rejected` (by reason). `received` is their sum
(`accounted` says so), except for messages of a batch that failed as a whole (`batch_errors`).
"""

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Histogram

RECENT_REJECTS = 50  # bounded: older rejects are only in the database's bounded table
# seconds for one batch, from the take to its last write (check, store, replies, rejects recorded)
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def batch_histogram() -> Histogram:
    """Fixed buckets, so its memory is bounded; registered in no registry here (fleet/ops/metrics.py
    registers it in the fleet's): every IngestStats has its own, so fleets in one process never clash."""
    return Histogram("fleet_ingest_batch_seconds", "Time the ingest took for one batch of messages, "
                     "from taking it off the queue to its last write", buckets=BATCH_SECONDS_BUCKETS, registry=None)


@dataclass
class IngestStats:
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    late: int = 0  # of `stored`: filled a gap
    gaps_opened: int = 0
    presence: int = 0  # births and deaths (whether they changed the device's presence or not)
    reserved: int = 0  # child messages: checked, numbered, applied to child_device
    ota: int = 0  # ota/progress reports: checked, numbered, applied to rollouts (fleet/ota/progress.py)
    skipped: Counter[str] = field(default_factory=Counter)  # not device messages: `own_publish`, `retained_clear`
    batches: int = 0
    batch_errors: int = 0  # batches whose processing failed unexpectedly (logged; the loop went on)
    store_retries: int = 0
    last_message_at: datetime | None = None
    rejected: Counter[str] = field(default_factory=Counter)
    recent_rejects: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_REJECTS))
    batch_seconds: Histogram = field(default_factory=batch_histogram)  # every batch, failed ones too

    def reject(self, topic: str, reason: str, detail: str, size: int) -> dict[str, Any]:
        self.rejected[reason] += 1
        entry = {"at": datetime.now(UTC), "topic": topic[:256], "reason": reason,
                 "detail": detail[:300], "size": size}
        self.recent_rejects.append(entry)
        return entry

    def accounted(self) -> int:
        return (self.stored + self.duplicates + self.presence + self.ota + self.reserved
                + sum(self.skipped.values())
                + sum(self.rejected.values()))

    def as_dict(self, queue_depth: int) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "received": self.received,
            "accounted": self.accounted(),  # below `received` while a batch is being stored
            "stored": self.stored,
            "duplicates": self.duplicates,
            "late": self.late,
            "gaps_opened": self.gaps_opened,
            "presence": self.presence,
            "ota": self.ota,
            "reserved": self.reserved,
            "skipped": dict(self.skipped),
            "batches": self.batches,
            "batch_errors": self.batch_errors,
            "store_retries": self.store_retries,
            "last_message_at": self.last_message_at,
            "rejected": dict(self.rejected),
            "rejected_total": sum(self.rejected.values()),
            "queue_depth": queue_depth,
            "recent_rejects": list(self.recent_rejects),
        }
