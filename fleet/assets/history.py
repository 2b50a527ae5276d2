"""An asset's history across the devices fitted to it (docs/assets.md, "History and report").

The asset's time is cut into its fittings; each device is read only over the interval it was on the
asset (fleet/ops/history.py for charted fields, `event` for events, `telemetry` for the lamp
counters), and the pieces are put end to end. A device's own history (the device page) is not
touched: the asset's is a view over it.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise import Tortoise
from tortoise.expressions import Q

from fleet.assets.models import Fitting
from fleet.models import Device, EventRecord
from fleet.ops import history
from fleet.relay.reports import Month, _Query

EVENTS_PER_PIECE = 100  # the newest events of each device's piece; the device's own page has them all


@dataclass(frozen=True, slots=True)
class Piece:
    """One device's time on the asset within the range asked: [start, end)."""

    fitting: Fitting
    start: datetime
    end: datetime


async def pieces(asset_id: str, start: datetime, end: datetime) -> list[Piece]:
    """The fittings that overlap [start, end), oldest first, cut to the range."""
    rows = await (Fitting.filter(Q(removed_at__isnull=True) | Q(removed_at__gt=start), asset_id=asset_id,
                                 fitted_at__lt=end).order_by("fitted_at", "id"))
    return [Piece(row, max(row.fitted_at, start), min(row.removed_at or end, end)) for row in rows
            if max(row.fitted_at, start) < min(row.removed_at or end, end)]


def program_digest(doc: dict[str, Any] | None) -> str | None:
    """A short digest of a desired document's light program (None: the device has none)."""
    program = (doc or {}).get("light")
    if program is None:
        return None
    return hashlib.sha256(json.dumps(program, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def gaps(found: list[Piece], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) after the first fitting that no device covered."""
    holes = []
    reached = found[0].start if found else end
    for piece in found:
        if piece.start > reached:
            holes.append((reached, piece.start))
        reached = max(reached, piece.end)
    if found and reached < end and found[-1].fitting.removed_at is not None:
        holes.append((reached, end))
    return holes


async def series(found: list[Piece], source: history.Source, field: str, points: int,
                 role: str | None) -> list[dict[str, Any]]:
    """The field charted over every piece, each from its own device, buckets of about the same width."""
    total = sum((p.end - p.start).total_seconds() for p in found) or 1.0
    out: list[dict[str, Any]] = []
    for piece in found:
        share = max(2, round(points * (piece.end - piece.start).total_seconds() / total))
        for point in await history.series(piece.fitting.device_id, source, field, piece.start, piece.end,
                                          min(share, history.POINTS_MAX), role):
            out.append({"device_id": piece.fitting.device_id, "at": point.at, "min": point.min, "max": point.max,
                        "mean": point.mean, "n": point.n})
    return out


async def known_fields(found: list[Piece], source: history.Source, role: str | None) -> list[str]:
    names: set[str] = set()
    for device_id in {p.fitting.device_id for p in found}:
        names.update(await history.fields(device_id, source, role))
    return sorted(names)


async def events(piece: Piece) -> list[dict[str, Any]]:
    rows = await (EventRecord.filter(device_id=piece.fitting.device_id, at__gte=piece.start, at__lt=piece.end)
                  .order_by("-at", "-id").limit(EVENTS_PER_PIECE)
                  .values("at", "type", "phase", "category", "event_id"))
    return list(rows)


async def _lamp(device_id: str, start: datetime, end: datetime) -> tuple[float, float, int]:
    """(burn hours, energy Wh, samples) of one device's light counters over [start, end): the rises
    between consecutive samples, a fall counting as a reset (the city report's rule, fleet/relay/reports.py)."""
    q = _Query(Tortoise.get_connection("default"))
    burn, energy = q.number("readings", "burn_h"), q.number("readings", "energy_wh")

    def rise(value: str, before: str) -> str:
        return f"CASE WHEN {before} IS NULL THEN 0 WHEN {value} >= {before} THEN {value} - {before} ELSE {value} END"

    sql = (f"SELECT coalesce(sum({rise('b', 'pb')}), 0), coalesce(sum({rise('e', 'pe')}), 0), count(*) FROM ("
           f"SELECT b, e, lag(b) OVER w AS pb, lag(e) OVER w AS pe FROM ("
           f"SELECT at, id, {burn} AS b, {energy} AS e FROM telemetry WHERE device_id = {q.param(device_id)} "
           f"AND role = 'light' AND at >= {q.param(start)} AND at < {q.param(end)}) AS a "
           f"WHERE b IS NOT NULL AND e IS NOT NULL WINDOW w AS (ORDER BY at, id)) AS s")
    [(burn_h, energy_wh, samples)] = await q.rows(sql)
    return float(burn_h), float(energy_wh), int(samples)


async def _failures(device_id: str, start: datetime, end: datetime) -> int:
    return await EventRecord.filter(device_id=device_id, type="lamp_failure", phase__in=["start", "once"],
                                    at__gte=start, at__lt=end).count()


async def asset_report(asset_id: str, month: Month, now: datetime) -> dict[str, Any]:
    """The month of one asset: lamp hours, energy and failures of each device over its time on the
    asset and in all; the program each carried; the uncovered gaps."""
    end = min(month.end, max(now, month.start))
    found = await pieces(asset_id, month.start, end)
    devices = {d.id: d for d in await Device.filter(id__in=[p.fitting.device_id for p in found])}
    rows: list[dict[str, Any]] = []
    for piece in found:
        device_id = piece.fitting.device_id
        burn_h, energy_wh, samples = await _lamp(device_id, piece.start, piece.end)
        device = devices.get(device_id)
        rows.append({
            "device_id": device_id, "start": piece.start, "end": piece.end, "fitted_at": piece.fitting.fitted_at,
            "removed_at": piece.fitting.removed_at, "reason": piece.fitting.reason,
            "status": device.status.value if device else None,
            "burn_h": round(burn_h, 3), "energy_kwh": round(energy_wh / 1000, 3), "samples": samples,
            "lamp_failures": await _failures(device_id, piece.start, piece.end),
            "program": program_digest(device.desired_doc if device else None),
            "desired_version": device.desired_version if device else None,
            "reported_version": device.reported_version if device else None,
            "reported_status": device.reported_status if device else None,
        })
    holes = gaps(found, month.start, end)
    programs = {row["program"] for row in rows}
    return {
        "asset_id": asset_id, "month": month.label, "timezone": month.tz.key, "start": month.start, "end": end,
        "devices": rows,
        "totals": {"burn_h": round(sum(r["burn_h"] for r in rows), 3),
                   "energy_kwh": round(sum(r["energy_kwh"] for r in rows), 3),
                   "lamp_failures": sum(r["lamp_failures"] for r in rows), "devices": len(rows)},
        "gaps": [{"start": a, "end": b} for a, b in holes],
        # the same light program on every device the asset had in the month, and no time without one
        "program_continuous": bool(rows) and not holes and len(programs) == 1 and None not in programs,
    }
