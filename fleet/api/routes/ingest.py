"""What the ingest has done: counters by outcome and the recent rejects."""

from typing import Any

from fastapi import APIRouter

from fleet.api.deps import LOGGED_IN, Reader, RuntimeDep

router = APIRouter(prefix="/api/ingest", tags=["ingest"], dependencies=[LOGGED_IN])


@router.get("/stats")
async def ingest_stats(runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    """Counters since this instance started; `rejected` is by reason (docs/protocol.md)."""
    return runtime.stats.as_dict(runtime.link.depth())
