"""City reports (docs/relay.md, "City reports"): per month of the city's calendar and per ward, the
figures the city's own report counts, computed by the database.

Every figure is one grouped query over the month's rows (joined to `device` for the ward), written
for SQLite and PostgreSQL both; Python receives one row per (ward, group) and adds up the totals.
A month is [local midnight of its first day, local midnight of the next month's first day) in
FLEET_TIMEZONE, as UTC instants; a row belongs to the month by its own time (`event.at`,
`telemetry.at`, `ops_presence_change.at`, `broadcast_receipt.occurrence_at`). A device counts in the
ward it has now (`device.ward`; "" when it has none). Pure of FastAPI: the routes and the page call
`city_report`.
"""

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

CAMERA_CATEGORIES = ("security", "traffic_safety", "other")  # the city's three purposes, in its order
BROADCAST_STATES = ("completed", "started", "failed", "missed", "not_delivered", "skipped", "pending",
                    "delivered", "clip_ready")
DAY_S = 86400
_MONTH = re.compile(r"(\d{4})-(\d{2})")


class ReportError(ValueError):
    """A request that cannot be answered (a bad month): a 422."""


@dataclass(frozen=True)
class Month:
    year: int
    month: int
    tz: ZoneInfo

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        after = date(self.year + self.month // 12, self.month % 12 + 1, 1)
        return datetime(after.year, after.month, 1, tzinfo=self.tz).astimezone(UTC)


def parse_month(text: str, tz: ZoneInfo) -> Month:
    found = _MONTH.fullmatch(text.strip()) if isinstance(text, str) and len(text) <= 16 else None
    if found is None or not 1 <= int(found[2]) <= 12 or not 2000 <= int(found[1]) <= 2999:
        raise ReportError("month must be YYYY-MM (2000-01 to 2999-12)")
    return Month(int(found[1]), int(found[2]), tz)


class _Query:
    """Placeholders, times and JSON numbers in the connection's dialect."""

    def __init__(self, conn: BaseDBAsyncClient) -> None:
        self.conn = conn
        self.pg = conn.capabilities.dialect == "postgres"
        self.values: list[Any] = []

    def param(self, value: Any) -> str:
        if isinstance(value, datetime) and not self.pg:
            value = value.astimezone(UTC).isoformat(" ")  # how Tortoise stores a time in SQLite
        self.values.append(value)
        if not self.pg:
            return f"?{len(self.values)}"  # numbered: a value may be used twice
        cast = "float8" if isinstance(value, float) else "timestamptz" if isinstance(value, datetime) else "text"
        return f"${len(self.values)}::{cast}"

    def epoch(self, column: str) -> str:
        """A time column as Unix seconds (a float)."""
        return f"extract(epoch FROM {column})::float8" if self.pg else f"((julianday({column}) - 2440587.5) * 86400.0)"

    @property
    def bytewise(self) -> str:
        """Appended to a text sort key: bytewise order (the database's locale order costs several
        times more and a device id needs no locale)."""
        return ' COLLATE "C"' if self.pg else ""

    def number(self, doc: str, key: str) -> str:
        """`doc.key` when it is a JSON number, else NULL (`key` is a constant of this module)."""
        if self.pg:
            return f"(CASE WHEN jsonb_typeof({doc} -> '{key}') = 'number' THEN ({doc} ->> '{key}')::float8 END)"
        return f"(CASE WHEN json_type({doc}, '$.{key}') IN ('integer', 'real') THEN json_extract({doc}, '$.{key}') END)"

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        _, rows = await self.conn.execute_query(sql, self.values)
        return [tuple(row) for row in rows]


def _ward_clause(q: _Query, ward: str | None) -> str:
    return "" if ward is None else f" AND coalesce(d.ward, '') = {q.param(ward)}"


async def _event_starts(conn: BaseDBAsyncClient, month: Month, ward: str | None) -> list[tuple[Any, ...]]:
    """(ward, type, category, count) of the events that begin in the month: phase start or once."""
    q = _Query(conn)
    sql = (f"SELECT coalesce(d.ward, '') AS w, e.type, e.category, count(*) FROM event e "
           f"LEFT JOIN device d ON d.id = e.device_id "
           f"WHERE e.at >= {q.param(month.start)} AND e.at < {q.param(month.end)} "
           f"AND e.phase IN ('start', 'once'){_ward_clause(q, ward)} GROUP BY w, e.type, e.category")
    return await q.rows(sql)


async def _wifi(conn: BaseDBAsyncClient, month: Month, ward: str | None) -> list[tuple[Any, ...]]:
    """(ward, hotspots, accesses, user-days, days capped) from the hotspot role's daily reports."""
    q = _Query(conn)
    period = q.number("t.readings", "period_s")
    sql = (f"SELECT coalesce(d.ward, '') AS w, count(DISTINCT t.device_id), "
           f"coalesce(sum({q.number('t.readings', 'accesses')}), 0), "
           f"coalesce(sum({q.number('t.readings', 'users')}), 0), "
           f"coalesce(sum(CASE WHEN {q.number('t.readings', 'users_capped')} > 0 THEN 1 ELSE 0 END), 0) "
           f"FROM telemetry t LEFT JOIN device d ON d.id = t.device_id "
           f"WHERE t.role = 'hotspot' AND t.at >= {q.param(month.start)} AND t.at < {q.param(month.end)} "
           f"AND {period} = {DAY_S}{_ward_clause(q, ward)} GROUP BY w")
    return await q.rows(sql)


async def _counters(conn: BaseDBAsyncClient, month: Month, ward: str | None) -> list[tuple[Any, ...]]:
    """(ward, lamps, burn hours, energy Wh) from the light role's cumulative counters: per device,
    the sum of the rises between its consecutive samples in the month (those carrying both
    counters, as the role sends them); a fall is a reset (the counter started again from 0), so the
    sample after it counts as its whole value. One scan, one window over both counters."""
    q = _Query(conn)
    burn, energy = q.number("readings", "burn_h"), q.number("readings", "energy_wh")

    def rise(value: str, before: str) -> str:
        return f"CASE WHEN {before} IS NULL THEN 0 WHEN {value} >= {before} THEN {value} - {before} ELSE {value} END"

    sql = (f"SELECT coalesce(d.ward, '') AS w, count(DISTINCT s.device_id), coalesce(sum({rise('b', 'pb')}), 0), "
           f"coalesce(sum({rise('e', 'pe')}), 0) FROM ("
           f"SELECT device_id, b, e, lag(b) OVER w AS pb, lag(e) OVER w AS pe FROM ("
           f"SELECT device_id, at, id, {burn} AS b, {energy} AS e FROM telemetry "
           f"WHERE role = 'light' AND at >= {q.param(month.start)} AND at < {q.param(month.end)}) AS a "
           f"WHERE b IS NOT NULL AND e IS NOT NULL "
           f"WINDOW w AS (PARTITION BY device_id{q.bytewise} ORDER BY at, id)) AS s "
           f"LEFT JOIN device d ON d.id = s.device_id WHERE 1 = 1{_ward_clause(q, ward)} GROUP BY w")
    return await q.rows(sql)


async def _availability(conn: BaseDBAsyncClient, month: Month, ward: str | None,
                        now: datetime) -> list[tuple[Any, ...]]:
    """(ward, devices, mean availability 0..1). A device's availability is the part of its window
    it was online: the window is [the month's start or the device's creation if later, the month's
    end or now if sooner); online from its presence changes in the window and the state of its last
    change before it (none: offline). Devices decommissioned or replaced, or created after the window, are out."""
    q = _Query(conn)
    end_at = min(month.end, max(now, month.start))
    start_s, end_s = q.param(month.start.timestamp()), q.param(end_at.timestamp())
    start, end = q.param(month.start), q.param(end_at)
    created = q.epoch("d.created_at")
    at = q.epoch("c.at")
    online = "c.online" if q.pg else "c.online = 1"
    sql = (
        f"WITH dev AS (SELECT d.id, coalesce(d.ward, '') AS w, "
        f"CASE WHEN {created} > {start_s} THEN {created} ELSE {start_s} END AS ws FROM device d "
        f"WHERE d.status NOT IN ('decommissioned', 'replaced'){_ward_clause(q, ward)}), "
        f"before AS (SELECT device_id, online, row_number() OVER (PARTITION BY device_id{q.bytewise} "
        f"ORDER BY at DESC, id DESC) "
        f"AS r FROM ops_presence_change WHERE at < {start}), "
        f"changes AS (SELECT c.device_id, {at} AS t, CASE WHEN {online} THEN 1 ELSE 0 END AS up "
        f"FROM ops_presence_change c WHERE c.at >= {start} AND c.at < {end} "
        f"UNION ALL SELECT device_id, {start_s} AS t, CASE WHEN {'online' if q.pg else 'online = 1'} THEN 1 ELSE 0 END "
        f"FROM before WHERE r = 1), "
        f"spans AS (SELECT device_id, t, up, coalesce(lead(t) OVER (PARTITION BY device_id{q.bytewise} ORDER BY t), "
        f"{end_s}) "
        f"AS t2 FROM changes), "
        f"per AS (SELECT dev.id, dev.w, dev.ws, coalesce(sum(CASE WHEN s.up = 1 AND s.t2 > "
        f"(CASE WHEN s.t > dev.ws THEN s.t ELSE dev.ws END) THEN s.t2 - (CASE WHEN s.t > dev.ws THEN s.t "
        f"ELSE dev.ws END) ELSE 0 END), 0) AS up_s FROM dev LEFT JOIN spans s ON s.device_id = dev.id "
        f"WHERE dev.ws < {end_s} GROUP BY dev.id, dev.w, dev.ws) "
        f"SELECT w, count(*), avg(up_s / ({end_s} - ws)) FROM per GROUP BY w")
    return await q.rows(sql)


async def _broadcasts(conn: BaseDBAsyncClient, month: Month, ward: str | None) -> list[tuple[Any, ...]]:
    """(ward, state, count) of the broadcast receipts whose occurrence is in the month."""
    q = _Query(conn)
    sql = (f"SELECT coalesce(d.ward, '') AS w, r.state, count(*) FROM broadcast_receipt r "
           f"LEFT JOIN device d ON d.id = r.device_id WHERE r.occurrence_at >= {q.param(month.start)} "
           f"AND r.occurrence_at < {q.param(month.end)}{_ward_clause(q, ward)} GROUP BY w, r.state")
    return await q.rows(sql)


async def _wards(conn: BaseDBAsyncClient, ward: str | None) -> list[str]:
    q = _Query(conn)
    sql = ("SELECT DISTINCT coalesce(d.ward, '') AS w FROM device d "
           "WHERE d.status NOT IN ('decommissioned', 'replaced')"
           + _ward_clause(q, ward))
    return [str(row[0]) for row in await q.rows(sql)]


def _empty_row(ward: str) -> dict[str, Any]:
    return {
        "ward": ward,
        "camera_events": {**dict.fromkeys(CAMERA_CATEGORIES, 0), "total": 0},
        "events": [],  # {"type", "category", "count"}: every event type's starts
        "lamp_failures": 0,
        "wifi": {"hotspots": 0, "accesses": 0, "user_days": 0, "days_capped": 0},
        "availability": {"devices": 0, "pct": None},
        "lighting": {"lamps": 0, "burn_h": 0.0, "energy_kwh": 0.0},
        "broadcasts": {"scheduled": 0, "played": 0, **dict.fromkeys(BROADCAST_STATES, 0)},
    }


def _add_totals(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total = _empty_row("")
    del total["ward"]
    events: dict[tuple[str, str], int] = defaultdict(int)
    weighted = 0.0
    for row in rows:
        for part in ("camera_events", "wifi", "lighting", "broadcasts"):
            for key, value in row[part].items():
                total[part][key] = total[part].get(key, 0) + value
        total["lamp_failures"] += row["lamp_failures"]
        for item in row["events"]:
            events[item["type"], item["category"]] += item["count"]
        devices = row["availability"]["devices"]
        if devices:
            total["availability"]["devices"] += devices
            weighted += row["availability"]["pct"] * devices
    total["events"] = [{"type": t, "category": c, "count": n} for (t, c), n in sorted(events.items())]
    if total["availability"]["devices"]:
        total["availability"]["pct"] = round(weighted / total["availability"]["devices"], 2)
    for key in ("burn_h", "energy_kwh"):
        total["lighting"][key] = round(total["lighting"][key], 3)
    return total


async def city_report(month: Month, ward: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The month's figures per ward (every ward that has a device, or the one asked for) and in all."""
    conn = Tortoise.get_connection("default")
    now = now or datetime.now(UTC)
    rows: dict[str, dict[str, Any]] = {}

    def row(name: Any) -> dict[str, Any]:
        return rows.setdefault(str(name), _empty_row(str(name)))

    for name in await _wards(conn, ward):
        row(name)
    for name, kind, category, count in await _event_starts(conn, month, ward):
        target = row(name)
        target["events"].append({"type": kind, "category": category, "count": int(count)})
        if kind == "motion":
            target["camera_events"][category] = target["camera_events"].get(category, 0) + int(count)
            target["camera_events"]["total"] += int(count)
        elif kind == "lamp_failure":
            target["lamp_failures"] += int(count)
    for name, hotspots, accesses, users, capped in await _wifi(conn, month, ward):
        row(name)["wifi"] = {"hotspots": int(hotspots), "accesses": int(accesses), "user_days": int(users),
                             "days_capped": int(capped)}
    for name, lamps, burn_h, energy_wh in await _counters(conn, month, ward):
        row(name)["lighting"] = {"lamps": int(lamps), "burn_h": round(float(burn_h), 3),
                                 "energy_kwh": round(float(energy_wh) / 1000, 3)}
    for name, devices, fraction in await _availability(conn, month, ward, now):
        row(name)["availability"] = {"devices": int(devices),
                                     "pct": None if fraction is None else round(float(fraction) * 100, 2)}
    for name, state, count in await _broadcasts(conn, month, ward):
        counts = row(name)["broadcasts"]
        counts[str(state)] = counts.get(str(state), 0) + int(count)
    for target in rows.values():
        counts = target["broadcasts"]
        counts["played"] = counts["completed"]
        counts["scheduled"] = sum(counts[s] for s in BROADCAST_STATES if s != "skipped")
        target["events"].sort(key=lambda item: (item["type"], item["category"]))
    wards = [rows[name] for name in sorted(rows)]
    return {"month": month.label, "timezone": month.tz.key, "start": month.start, "end": month.end,
            "ward": ward, "wards": wards, "totals": _add_totals(wards)}


# -- CSV: one row per ward and figure ---------------------------------------------------------------

CSV_COLUMNS = ("month", "ward", "figure", "value")
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def figures(part: dict[str, Any]) -> list[tuple[str, Any]]:
    """A ward's (or the totals') figures as flat (name, value) pairs, in the page's order."""
    out: list[tuple[str, Any]] = [(f"camera_events.{k}", v) for k, v in part["camera_events"].items()]
    out += [(f"events.{e['type']}.{e['category']}", e["count"]) for e in part["events"]]
    out.append(("lamp_failures", part["lamp_failures"]))
    out += [(f"wifi.{k}", v) for k, v in part["wifi"].items()]
    out += [(f"availability.{k}", v) for k, v in part["availability"].items()]
    out += [(f"lighting.{k}", v) for k, v in part["lighting"].items()]
    out += [(f"broadcasts.{k}", v) for k, v in part["broadcasts"].items()]
    return out


def csv_text(value: Any) -> Any:
    """A cell: a number as is, None empty; text a spreadsheet would take for a formula gets a leading '."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_LEADS) else text


def csv_rows(report: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = [list(CSV_COLUMNS)]
    for ward in report["wards"]:
        rows += [[report["month"], csv_text(ward["ward"]), name, csv_text(value)] for name, value in figures(ward)]
    rows += [[report["month"], "*", name, csv_text(value)] for name, value in figures(report["totals"])]
    return rows
