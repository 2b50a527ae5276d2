"""The audit log: who changed what, when, from where."""

from typing import Any

from fleet.models import AuditEntry


async def record(actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None,
                 source: str = "") -> None:
    await AuditEntry.create(actor=actor[:80], action=action, target=target[:200], detail=detail,
                            source=source[:64])
