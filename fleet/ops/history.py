"""A device's health and telemetry over time, for charts (docs/ops.md "Retention").

`series` answers at most `points` buckets over [start, end), each with the min, max, mean and
count of one numeric field. It reads two stores and adds them up per bucket:
- raw rows (`health` by `received_at`, `telemetry` by `at`) still in the database, aggregated in
  SQL (the database does the counting: Python receives one row per bucket); the scan is bounded
  to the newest RAW_ROWS_MAX rows of the range: a range holding more shows only those (logged);
- hourly aggregates (`ops_health_hourly`, `ops_telemetry_hourly`) that retention made of older
  raw rows, at most HOURLY_ROWS_MAX of them (the newest); each lands in the bucket of its hour's
  start.
Nothing here depends on the retention settings: an hour is charted from whatever holds it (a late
raw row for an hour already rolled up adds to that hour until the next roll-up merges it).

A field is a dotted path to a number in the health body (`temp_c`, `roles.camera.fps`) or in a
telemetry message's readings (`pm25`); booleans are not numbers.
"""

import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from tortoise import Tortoise

from fleet.models import HealthRecord, TelemetryRecord
from fleet.ops.models import HealthHourly, TelemetryHourly

log = logging.getLogger(__name__)

Source = Literal["health", "telemetry"]

POINTS_MAX = 2000  # buckets per series
RAW_ROWS_MAX = 250_000  # raw rows one series scans (14 days of health every 5 s is 241,920)
HOURLY_ROWS_MAX = 24 * 800  # hourly rows one series reads (800 days)
FIELDS_ROWS = 50  # recent rows `fields` looks at
FIELD_DEPTH_MAX = 6  # levels of a dotted path
INT_MAX = 2**63  # larger integers are not charted
_SEGMENT = re.compile(r"[A-Za-z0-9_\-]{1,64}")


class HistoryError(ValueError):
    """A request for a series that cannot be answered (bad field, range or points): a 400."""


@dataclass(frozen=True)
class Point:
    at: datetime  # the bucket's start
    min: float
    max: float
    mean: float
    n: int


@lru_cache(maxsize=4096)
def _key_ok(key: str) -> bool:
    return _SEGMENT.fullmatch(key) is not None


def numeric_paths(doc: Mapping[str, Any], prefix: str = "", depth: int = 1) -> Iterator[tuple[str, float]]:
    """Every (dotted path, number) in a parsed JSON object, to FIELD_DEPTH_MAX levels. Retention
    runs this on every raw row it rolls up: exact type checks (a bool is no int here), keys checked
    once each."""
    for key, value in doc.items():
        kind = type(value)
        if kind is float:
            if math.isfinite(value) and _key_ok(key):
                yield prefix + key, value
        elif kind is int:
            if -INT_MAX < value < INT_MAX and _key_ok(key):
                yield prefix + key, float(value)
        elif kind is dict and depth < FIELD_DEPTH_MAX and _key_ok(key):
            yield from numeric_paths(value, f"{prefix}{key}.", depth + 1)


def field_segments(field: str) -> list[str]:
    segments = field.split(".")
    if len(field) > 300 or len(segments) > FIELD_DEPTH_MAX or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise HistoryError("field must be a dotted path of letters, digits, '_' and '-' (at most 6 levels)")
    return segments


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise HistoryError("times must carry a time zone")
    return moment.astimezone(UTC)


class _Bucket:
    __slots__ = ("high", "low", "n", "total")

    def __init__(self) -> None:
        self.low = math.inf
        self.high = -math.inf
        self.total = 0.0
        self.n = 0

    def add(self, low: float, high: float, mean: float, n: int) -> None:
        self.low = min(self.low, low)
        self.high = max(self.high, high)
        self.total += mean * n
        self.n += n


async def series(device_id: str, source: Source, field: str, start: datetime, end: datetime, points: int,
                 role: str | None = None) -> list[Point]:
    """The field over [start, end) in at most `points` buckets of equal width, empty ones left out."""
    segments = field_segments(field)
    start, end = _utc(start), _utc(end)
    if not start < end:
        raise HistoryError("start must be before end")
    if not 1 <= points <= POINTS_MAX:
        raise HistoryError(f"points must be 1 to {POINTS_MAX}")
    if source not in ("health", "telemetry"):
        raise HistoryError("source must be health or telemetry")
    width = (end - start) / points
    buckets: dict[int, _Bucket] = {}

    def bucket(index: int) -> _Bucket:
        index = min(max(index, 0), points - 1)
        return buckets.setdefault(index, _Bucket())

    for index, low, high, mean, n in await _raw(device_id, source, segments, start, end, width, role):
        bucket(index).add(low, high, mean, n)
    for hour, figure in await _hourly(device_id, source, field, start, end, role):
        bucket(int((hour - start) / width)).add(figure["min"], figure["max"], figure["mean"], int(figure["n"]))
    return [Point(at=start + width * index, min=b.low, max=b.high, mean=b.total / b.n, n=b.n)
            for index, b in sorted(buckets.items()) if b.n]


async def _hourly(device_id: str, source: Source, field: str, start: datetime, end: datetime,
                  role: str | None) -> list[tuple[datetime, dict[str, float]]]:
    model = HealthHourly if source == "health" else TelemetryHourly
    query = model.filter(device_id=device_id, hour__gte=start, hour__lt=end)
    if source == "telemetry" and role is not None:
        query = query.filter(role=role)
    rows = await query.order_by("-hour").limit(HOURLY_ROWS_MAX).values_list("hour", "figures")
    if len(rows) == HOURLY_ROWS_MAX:
        log.warning("history %s %s: more than %d hourly rows in the range; the oldest left out",
                    device_id, source, HOURLY_ROWS_MAX)
    found = []
    for hour, figures in rows:
        figure = (figures or {}).get(field)
        if isinstance(figure, dict) and figure.get("n"):
            found.append((_utc(hour), figure))
    return found


async def _raw(device_id: str, source: Source, segments: list[str], start: datetime, end: datetime,
               width: timedelta, role: str | None) -> list[tuple[int, float, float, float, int]]:
    """(bucket, min, max, mean, n) per bucket of the raw rows, computed by the database."""
    table, doc, time = ("health", "data", "received_at") if source == "health" else ("telemetry", "readings", "at")
    conn = Tortoise.get_connection("default")
    width_s = width.total_seconds()
    role_clause = source == "telemetry" and role is not None
    if conn.capabilities.dialect == "postgres":
        scan = (f"SELECT {time} AS t, {doc} #> $4::text[] AS v FROM {table} "
                f"WHERE device_id = $1 AND {time} >= $2 AND {time} < $3"
                + (" AND role = $6" if role_clause else "") + f" ORDER BY {time} DESC LIMIT {RAW_ROWS_MAX}")
        number = "CASE WHEN jsonb_typeof(v) = 'number' THEN (v #>> '{}')::float8 END"
        bucket = "floor(extract(epoch FROM (t - $2))::float8 / $5::float8)::bigint"
        values: list[Any] = [device_id, start, end, segments, width_s] + ([role] if role_clause else [])
    else:
        path = "$" + "".join(f'."{s}"' for s in segments)
        scan = (f"SELECT {time} AS t, json_extract({doc}, ?) AS v, json_type({doc}, ?) AS k FROM {table} "
                f"WHERE device_id = ? AND {time} >= ? AND {time} < ?"
                + (" AND role = ?" if role_clause else "") + f" ORDER BY {time} DESC LIMIT {RAW_ROWS_MAX}")
        number = "CASE WHEN k IN ('integer', 'real') THEN v END"
        bucket = "CAST((julianday(t) - julianday(?)) * 86400.0 / ? AS INTEGER)"
        values = [start.isoformat(" "), width_s, path, path, device_id, start.isoformat(" "), end.isoformat(" ")]
        values += [role] if role_clause else []
    # one scan: count(*) is every row scanned (for the bound), count(number) the rows with the field
    sql = (f"SELECT {bucket} AS b, min({number}), max({number}), avg({number}), count({number}), count(*) "
           f"FROM ({scan}) AS s GROUP BY b")
    _, rows = await conn.execute_query(sql, values)
    found = []
    scanned = 0
    for row in rows:
        index, low, high, mean, n, seen = tuple(row)
        scanned += seen
        if n:
            found.append((int(index), float(low), float(high), float(mean), int(n)))
    if scanned >= RAW_ROWS_MAX:
        log.warning("history %s %s: %d raw rows or more in the range; only the newest are charted",
                    device_id, source, RAW_ROWS_MAX)
    return found


async def fields(device_id: str, source: Source, role: str | None = None) -> list[str]:
    """What can be charted: the numeric fields of the device's FIELDS_ROWS newest raw rows, or of
    its newest hourly rows when no raw row is left."""
    found: set[str] = set()
    if source == "health":
        docs = await HealthRecord.filter(device_id=device_id).order_by("-received_at").limit(
            FIELDS_ROWS).values_list("data", flat=True)
    else:
        query = TelemetryRecord.filter(device_id=device_id)
        if role is not None:
            query = query.filter(role=role)
        docs = await query.order_by("-at").limit(FIELDS_ROWS).values_list("readings", flat=True)
    for doc in docs:
        if isinstance(doc, Mapping):
            found.update(path for path, _ in numeric_paths(doc))
    if not found:
        hourly = (HealthHourly.filter(device_id=device_id) if source == "health"
                  else TelemetryHourly.filter(device_id=device_id))
        if source == "telemetry" and role is not None:
            hourly = hourly.filter(role=role)
        for figures in await hourly.order_by("-hour").limit(FIELDS_ROWS).values_list("figures", flat=True):
            if isinstance(figures, Mapping):
                found.update(key for key in figures if isinstance(key, str))
    return sorted(found)
