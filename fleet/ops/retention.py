"""Retention (docs/ops.md "Retention"): raw health and telemetry older than the raw window are rolled
up into hourly aggregates and deleted; hourly aggregates, device events, presence changes and
resolved alerts are deleted after their own windows.

A run does bounded work and keeps its place: the roll-up walks the devices that have raw rows
(in id order, a cursor per table) and takes at most CHUNK_ROWS of one device's oldest rows per
transaction, ROWS_PER_RUN rows and DEVICES_PER_RUN devices per table per run; the deletes take
PRUNE_BATCH rows per statement and PRUNE_BATCHES statements per table per run. A run that reached
a bound runs again at the next worker turn (the backlog catches up); one that did not waits
FLEET_RETENTION_EVERY_S.

Each chunk is one transaction: its raw rows are deleted with RETURNING and exactly those rows are
merged into the hourly rows (min with min, max with max, mean weighted by n, n added). A crash
rolls both back; a second fleet instance cannot take the same rows (PostgreSQL: FOR UPDATE SKIP
LOCKED; a row another instance deleted first is not returned; SQLite has one writer); a late raw
row for an hour already rolled up is merged into that hour by a later run; nothing is counted
twice because nothing is aggregated that is not deleted in the same transaction.

On PostgreSQL with `telemetry` partitioned by month (fleet/partitions.py), telemetry rows are not
deleted one by one: a month partition whose whole month is older than the raw cutoff is detached
(late rows of that month land in DEFAULT from then on), read in chunks of CHUNK_ROWS in
(device_id, at, id) order, each chunk merged into the hourly rows in one transaction with the
chunk's end written to `partition_rollup` (the cursor; locked FOR UPDATE SKIP LOCKED, so one
instance rolls a partition at a time), and dropped in the transaction of its last chunk. The row
path above then runs on the DEFAULT partition only. So a month's raw rows are kept between
FLEET_RETENTION_RAW_DAYS and that plus one month.
"""

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model
from tortoise.transactions import in_transaction

from fleet import partitions
from fleet.models import EventRecord
from fleet.ops.history import numeric_paths
from fleet.ops.models import Alert, AlertState, HealthHourly, Notification, PresenceChange, TelemetryHourly
from fleet.relay.models import DeliveryStatus, RelayDelivery
from fleet.relay.snapshots import SnapshotStore
from fleet.settings import Settings

log = logging.getLogger(__name__)

Source = Literal["health", "telemetry"]

CHUNK_ROWS = 2_000  # raw rows of one device rolled up per transaction
ROWS_PER_RUN = 20_000  # raw rows rolled up per table per run (about 1-2 s of a worker turn)
DEVICES_PER_RUN = 500  # devices looked at per table per run
PRUNE_BATCH = 5_000  # rows deleted per statement
PRUNE_BATCHES = 20  # statements per table per run


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Figure:
    low: float
    high: float
    total: float
    n: int

    def add(self, low: float, high: float, total: float, n: int) -> None:
        self.low, self.high = min(self.low, low), max(self.high, high)
        self.total += total
        self.n += n

    def stored(self) -> dict[str, float]:
        return {"min": self.low, "max": self.high, "mean": self.total / self.n, "n": self.n}


@dataclass
class HourAggregate:
    messages: int = 0
    figures: dict[str, Figure] = field(default_factory=dict)

    def add_doc(self, doc: Mapping[str, Any]) -> None:
        self.messages += 1
        figures = self.figures
        for path, value in numeric_paths(doc):
            figure = figures.get(path)
            if figure is None:
                figures[path] = Figure(value, value, value, 1)
                continue
            if value < figure.low:
                figure.low = value
            if value > figure.high:
                figure.high = value
            figure.total += value
            figure.n += 1

    def merged_into(self, stored: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        """The stored figures with these added (an hour rolled up before, then late rows)."""
        merged: dict[str, dict[str, float]] = {k: dict(v) for k, v in stored.items() if isinstance(v, Mapping)}
        for path, figure in self.figures.items():
            old = merged.get(path)
            if old and old.get("n"):
                both = Figure(float(old["min"]), float(old["max"]), float(old["mean"]) * int(old["n"]), int(old["n"]))
                both.add(figure.low, figure.high, figure.total, figure.n)
                merged[path] = both.stored()
            else:
                merged[path] = figure.stored()
        return merged


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _moment(value: Any) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class RunReport:
    rolled: dict[str, int] = field(default_factory=dict)  # raw rows rolled up, per table
    deleted: dict[str, int] = field(default_factory=dict)  # rows deleted, per table
    dropped: list[str] = field(default_factory=list)  # partitions dropped after their roll-up (PostgreSQL)
    more: bool = False  # a bound was reached: run again at the next turn


class Retention:
    """The retention part of the ops worker (fleet/ops/service.py)."""

    def __init__(self, settings: Settings) -> None:
        self.raw = timedelta(days=settings.retention_raw_days)
        self.hourly = timedelta(days=settings.retention_hourly_days)
        self.events = timedelta(days=settings.retention_events_days)
        self.presence = timedelta(days=settings.retention_presence_days)
        self.alerts = timedelta(days=settings.retention_alerts_days)
        self.every = timedelta(seconds=settings.retention_every_s)
        self.snapshots = SnapshotStore(settings)  # images after FLEET_RETENTION_SNAPSHOTS_DAYS, rows and files
        self.next_run: datetime | None = None  # this instance's own schedule (in memory)
        self._cursor: dict[Source, str] = {"health": "", "telemetry": ""}

    async def tick(self, now: datetime) -> None:
        if self.next_run is not None and now < self.next_run:
            return
        self.next_run = now + self.every  # a run that fails is tried again after the interval, not every turn
        report = await self.run(now)
        if report.more:
            self.next_run = now
        if any(report.rolled.values()) or any(report.deleted.values()) or report.dropped:
            log.info("retention: rolled up %s, deleted %s, dropped partitions %s%s", report.rolled,
                     report.deleted, report.dropped or "none", " (more next turn)" if report.more else "")

    async def run(self, now: datetime) -> RunReport:
        """One bounded run, whatever the schedule."""
        report = RunReport()
        raw_cutoff = hour_of(now - self.raw)  # whole hours only: an hour is rolled up at once
        tables: dict[Source, str] = {"health": "health", "telemetry": "telemetry"}
        conn = Tortoise.get_connection("default")
        if await partitions.is_partitioned(conn):
            # next months' partitions by the wall clock (the rows arriving now land by it), then
            # whole months older than the cutoff rolled up and dropped; rows only from DEFAULT
            await partitions.ensure_partitioned(conn, datetime.now(UTC))
            rolled, dropped, more = await _roll_partitions(conn, raw_cutoff)
            report.rolled["telemetry_partitions"] = rolled
            report.dropped = dropped
            report.more |= more
            tables["telemetry"] = partitions.default_name(partitions.TELEMETRY)
        for source in ("health", "telemetry"):
            rolled, more = await self._roll_up(source, raw_cutoff, tables[source])
            report.rolled[source] = rolled
            report.more |= more
        hourly_cutoff = hour_of(now - self.hourly)
        for name, model, query in (
            ("health_hourly", HealthHourly, HealthHourly.filter(hour__lt=hourly_cutoff)),
            ("telemetry_hourly", TelemetryHourly, TelemetryHourly.filter(hour__lt=hourly_cutoff)),
            # an alert's history (ops_alert_event) goes with it (ON DELETE CASCADE)
            ("alert", Alert, Alert.filter(state=AlertState.RESOLVED, resolved_at__lt=now - self.alerts)),
            # the relay's delivered and dead-lettered messages go with the events (docs/relay.md)
            ("relay_delivery", RelayDelivery,
             RelayDelivery.filter(status__in=[DeliveryStatus.DELIVERED, DeliveryStatus.DEAD],
                                  done_at__lt=now - self.events)),
        ):
            deleted, more = await _prune(model, query)
            report.deleted[name] = deleted
            report.more |= more
        oldest: tuple[tuple[str, type[Model], str, timedelta], ...] = (
            ("event", EventRecord, "received_at", self.events),
            ("presence_change", PresenceChange, "at", self.presence),
            # the notification outbox: the record of what was sent, kept as long as alert history
            ("notification", Notification, "created_at", self.alerts))
        for name, table, time, window in oldest:
            deleted, more = await _prune_oldest(table, time, now - window)
            report.deleted[name] = deleted
            report.more |= more
        deleted, more = await self.snapshots.prune(now)
        report.deleted["snapshot"] = deleted
        report.more |= more
        return report

    # -- raw -> hourly ------------------------------------------------------------------------

    async def _roll_up(self, source: Source, cutoff: datetime, table: str) -> tuple[int, bool]:
        conn = Tortoise.get_connection("default")
        mark = "$1" if conn.capabilities.dialect == "postgres" else "?"
        rows = devices = 0
        while devices < DEVICES_PER_RUN:
            found = await conn.execute_query_dict(
                f"SELECT device_id FROM {table} WHERE device_id > {mark} ORDER BY device_id LIMIT 1",
                [self._cursor[source]])
            if not found:
                self._cursor[source] = ""  # a whole pass done
                return rows, False
            device = found[0]["device_id"]
            devices += 1
            while True:
                if rows >= ROWS_PER_RUN:
                    return rows, True  # this device again next run (the cursor stays before it)
                limit = min(CHUNK_ROWS, ROWS_PER_RUN - rows)
                taken = await _roll_chunk(source, table, str(device), cutoff, limit)
                rows += taken
                if taken < limit:
                    break
            self._cursor[source] = str(device)
        return rows, True


async def _roll_chunk(source: Source, table: str, device_id: str, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` of the device's raw rows older than `cutoff` and merge exactly those
    into the hourly rows, in one transaction. The number of rows rolled up."""
    async with in_transaction() as conn:
        rows = await _take_raw(conn, source, table, device_id, cutoff, limit)
        if not rows:
            return 0
        hours: dict[tuple[str, datetime], HourAggregate] = {}
        for row in rows:
            if source == "health":
                key, doc = ("", hour_of(_moment(row["received_at"]))), _json(row["data"])
            else:
                key, doc = (str(row["role"]), hour_of(_moment(row["at"]))), _json(row["readings"])
            aggregate = hours.setdefault(key, HourAggregate())
            aggregate.add_doc(doc if isinstance(doc, Mapping) else {})
        await _merge_hourly(conn, source, device_id, hours)
        return len(rows)


async def _take_raw(conn: BaseDBAsyncClient, source: Source, table: str, device_id: str, cutoff: datetime,
                    limit: int) -> list[dict[str, Any]]:
    time, columns = ("received_at", "received_at, data") if source == "health" else ("at", "at, role, readings")
    if Tortoise.get_connection("default").capabilities.dialect == "postgres":
        sql = (f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE device_id = $1 AND {time} < $2 "
               f"ORDER BY {time} LIMIT {int(limit)} FOR UPDATE SKIP LOCKED) RETURNING {columns}")
        values: list[Any] = [device_id, cutoff]
    else:
        sql = (f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE device_id = ? AND {time} < ? "
               f"ORDER BY {time} LIMIT {int(limit)}) RETURNING {columns}")
        values = [device_id, cutoff.isoformat(" ")]
    return await conn.execute_query_dict(sql, values)


def _telemetry_hours(rows: list[dict[str, Any]]) -> dict[tuple[str, datetime], HourAggregate]:
    hours: dict[tuple[str, datetime], HourAggregate] = {}
    for row in rows:
        doc = _json(row["readings"])
        hours.setdefault((str(row["role"]), hour_of(_moment(row["at"]))), HourAggregate()).add_doc(
            doc if isinstance(doc, Mapping) else {})
    return hours


async def _roll_partitions(conn: BaseDBAsyncClient, cutoff: datetime) -> tuple[int, list[str], bool]:
    """Detach the month partitions older than `cutoff`, roll up detached ones (at most
    ROWS_PER_RUN rows), drop those done. (rows rolled up, partitions dropped, a bound reached)."""
    spec = partitions.TELEMETRY
    for name in await partitions.partitions(conn, spec):
        month = partitions.month_of(spec, name)
        if month is not None and partitions.add_months(month, 1) <= cutoff:
            await partitions.detach_month(conn, spec, name)
    pending = await conn.execute_query_dict(
        f"SELECT partition FROM {partitions.ROLLUP_TABLE} WHERE parent = $1 ORDER BY partition", [spec.table])
    rows, dropped = 0, list[str]()
    for row in pending:
        name = str(row["partition"])
        if partitions.month_of(spec, name) is None:
            continue  # not a name we made: never put into SQL
        while True:
            if rows >= ROWS_PER_RUN:
                return rows, dropped, True
            taken, done = await _roll_partition_chunk(name, min(CHUNK_ROWS, ROWS_PER_RUN - rows))
            rows += taken
            if done:
                dropped.append(name)
            if done or taken == 0:  # finished, or another instance holds it
                break
    return rows, dropped, False


async def _roll_partition_chunk(name: str, limit: int) -> tuple[int, bool]:
    """The next `limit` rows of a detached partition merged into the hourly rows and the cursor
    moved past them, in one transaction; the partition dropped with its last chunk. (rows, dropped)."""
    async with in_transaction() as conn:
        cursor = await conn.execute_query_dict(
            f"SELECT device_id, at, id FROM {partitions.ROLLUP_TABLE} WHERE partition = $1 "
            "FOR UPDATE SKIP LOCKED", [name])
        if not cursor:
            return 0, False
        after, values = "", [cursor[0]["device_id"], cursor[0]["at"], cursor[0]["id"]]
        if values[0] is not None:
            after = "WHERE (device_id, at, id) > ($1, $2, $3) "
        rows = await conn.execute_query_dict(
            f"SELECT id, device_id, at, role, readings FROM {name} {after}ORDER BY device_id, at, id "
            f"LIMIT {int(limit)}", values if after else None)
        by_device: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_device.setdefault(str(row["device_id"]), []).append(row)
        for device_id in sorted(by_device):
            await _merge_hourly(conn, "telemetry", device_id, _telemetry_hours(by_device[device_id]))
        if len(rows) < limit:
            await conn.execute_script(f"DROP TABLE {name}")
            await conn.execute_query(f"DELETE FROM {partitions.ROLLUP_TABLE} WHERE partition = $1", [name])
            return len(rows), True
        last = rows[-1]
        await conn.execute_query(f"UPDATE {partitions.ROLLUP_TABLE} SET device_id = $2, at = $3, id = $4 "
                                 "WHERE partition = $1", [name, last["device_id"], last["at"], last["id"]])
        return len(rows), False


def _lock_order(key: tuple[str, datetime]) -> tuple[datetime, str]:
    return key[1], key[0]


async def _merge_hourly(conn: BaseDBAsyncClient, source: Source, device_id: str,
                        hours: dict[tuple[str, datetime], HourAggregate]) -> None:
    """Add the aggregates to the (device, [role,] hour) rows: an empty row is inserted where none
    is (ignoring a conflict with one another instance made), then each is locked and updated."""
    model: type[HealthHourly] | type[TelemetryHourly] = HealthHourly if source == "health" else TelemetryHourly
    keys = sorted(hours, key=_lock_order)
    if source == "health":
        await HealthHourly.bulk_create([HealthHourly(device_id=device_id, hour=hour, figures={}, messages=0)
                                        for _, hour in keys], ignore_conflicts=True, using_db=conn)
    else:
        await TelemetryHourly.bulk_create([TelemetryHourly(device_id=device_id, role=role, hour=hour, figures={},
                                                           messages=0) for role, hour in keys],
                                          ignore_conflicts=True, using_db=conn)
    # locked in one order (hour, role), as the rows were inserted: two instances merging into the
    # same hours wait for each other instead of deadlocking
    stored = await model.filter(device_id=device_id, hour__in=sorted({hour for _, hour in hours})) \
        .order_by("hour", *(["role"] if source == "telemetry" else [])).select_for_update().using_db(conn)
    for row in stored:
        key = (getattr(row, "role", ""), hour_of(row.hour))
        aggregate = hours.get(key)
        if aggregate is None:
            continue  # another role's row of the same hour
        row.figures = aggregate.merged_into(row.figures or {})
        row.messages += aggregate.messages
        await row.save(using_db=conn, update_fields=["figures", "messages"])


# -- deletes ------------------------------------------------------------------------------------

async def _prune(model: type[Model], query: Any) -> tuple[int, bool]:
    """Delete what `query` finds, PRUNE_BATCH rows per statement, at most PRUNE_BATCHES statements."""
    deleted = 0
    for _ in range(PRUNE_BATCHES):
        # the ids first: SQLite's count of a DELETE includes the rows its foreign keys cascade to
        ids = await query.order_by("id").limit(PRUNE_BATCH).values_list("id", flat=True)
        if ids:
            await model.filter(id__in=ids).delete()
        deleted += len(ids)
        if len(ids) < PRUNE_BATCH:
            return deleted, False
    return deleted, True


async def _prune_oldest(model: type[Model], time: str, cutoff: datetime) -> tuple[int, bool]:
    """Delete rows older than `cutoff` among the PRUNE_BATCH lowest ids, at most PRUNE_BATCHES times.

    For tables written as things arrive (ids follow time) with no index on their time: each
    statement reads PRUNE_BATCH rows by primary key instead of scanning for old ones; it stops at
    the first batch that holds a young row.
    """
    deleted = 0
    for _ in range(PRUNE_BATCHES):
        batch = await model.all().order_by("id").limit(PRUNE_BATCH).values_list("id", time)
        old = [row_id for row_id, moment in batch if _moment(moment) < cutoff]
        if old:
            deleted += await model.filter(id__in=old).delete()
        if len(old) < PRUNE_BATCH:
            return deleted, False
    return deleted, True
