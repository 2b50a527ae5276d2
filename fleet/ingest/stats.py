"""Counters of what the ingest did, for the API, the status page and (later) Prometheus."""

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

RECENT_REJECTS = 50  # bounded: older rejects are only in the database's bounded table


@dataclass
class IngestStats:
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    late: int = 0
    gaps_opened: int = 0
    batches: int = 0
    store_retries: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    recent_rejects: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_REJECTS))

    def reject(self, topic: str, reason: str, detail: str, size: int) -> dict[str, Any]:
        self.rejected[reason] += 1
        entry = {"at": datetime.now(UTC), "topic": topic[:256], "reason": reason,
                 "detail": detail[:300], "size": size}
        self.recent_rejects.append(entry)
        return entry

    def as_dict(self, queue_depth: int) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "late": self.late,
            "gaps_opened": self.gaps_opened,
            "batches": self.batches,
            "store_retries": self.store_retries,
            "rejected": dict(self.rejected),
            "rejected_total": sum(self.rejected.values()),
            "queue_depth": queue_depth,
            "recent_rejects": list(self.recent_rejects),
        }
