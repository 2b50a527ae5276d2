"""What the dashboard tests share: a logged-in page client, messages through the real ingest at the
times a test chooses, alerts as helper A's engine would leave them."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx

from contract.messages import Upstream, parse_upstream
from fleet.ingest.store import apply_batch
from fleet.ops.models import Alert, AlertRule, AlertState, Severity


@asynccontextmanager
async def page_client(fleet: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client with a login session cookie (the pages read the cookie, not a token)."""
    async with httpx.AsyncClient(base_url=str(fleet.base_url)) as http:
        link = (await fleet.post("/api/auth/login-link")).json()["url"]
        redeemed = await http.post("/login/link", data={"code": link.split("code=")[1]},
                                   headers={"Origin": str(fleet.base_url).rstrip("/")})
        assert redeemed.status_code == 303
        yield http


def message(device_id: str, suffix: str, ses: int, seq: int | None, **body: Any) -> Upstream:
    envelope: dict[str, Any] = {"v": 1, "ses": ses, "ts": body.pop("ts", None)}
    if seq is not None:
        envelope["seq"] = seq
    return parse_upstream(f"ioc/v1/d/{device_id}/{suffix}", json.dumps({**envelope, **body}).encode())


async def ingest(messages: list[Upstream], now: datetime) -> None:
    result = await apply_batch(messages, now)
    assert result.refused == []


def temp_at(i: int) -> float:
    """A cabinet's temperature: a daily-ish swing, so min, max and mean differ within a bucket."""
    return 40.0 + (i % 17) * 0.7 - (i % 5) * 0.3


async def env_node_history(device_id: str, start: datetime, minutes: int, gap: range) -> int:
    """An environment node's birth at `start`, then a health report each minute (none in the
    minutes of `gap`) and a pm25 reading every 5 minutes, all through the ingest at their times;
    returns the health reports stored."""
    await ingest([message(device_id, "birth", 3, None, kind="pi", fw="1.4.2", roles=["env"], period_s=60,
                          boot={"n": 1, "reason": "start"})], start)
    seq = 0
    stored = 0
    for minute in range(minutes):
        at = start + timedelta(minutes=minute, seconds=5)
        batch = []
        if minute not in gap:
            batch.append(message(device_id, "health", 3, seq, up_s=minute * 60, fw="1.4.2",
                                 temp_c=temp_at(minute), heap_free=50_000 - minute,
                                 roles={"env": {"fan_rpm": 1200 + minute % 7}}))
            seq += 1
            stored += 1
        if minute % 5 == 0 and minute not in gap:
            batch.append(message(device_id, "telemetry", 3, seq, role="env", r={"pm25": 10.0 + minute % 13},
                                 ts=int(at.timestamp() * 1000)))
            seq += 1
        if batch:
            await ingest(batch, at)
    return stored


async def alert(device_id: str, ward: str, severity: Severity, state: AlertState, raised_at: datetime,
                summary: str, kind: str = "offline") -> Alert:
    rule, _ = await AlertRule.get_or_create(name=f"test {kind} {severity.value}",
                                            defaults={"kind": kind, "severity": severity})
    resolved = state is AlertState.RESOLVED
    return await Alert.create(rule=rule, kind=kind, device_id=device_id, ward=ward, severity=severity, state=state,
                              live_key=None if resolved else f"{rule.id}:{device_id}", summary=summary,
                              raised_at=raised_at, last_true_at=raised_at,
                              resolved_at=raised_at + timedelta(minutes=5) if resolved else None,
                              acknowledged_by="ops-anh" if state is AlertState.ACKNOWLEDGED else None)
