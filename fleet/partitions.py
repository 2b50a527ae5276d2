"""Telemetry at scale on PostgreSQL (docs/fleet.md, "Telemetry at scale"): the `telemetry` table
partitioned by month of `at` (native declarative partitioning), so retention drops a month's
partition instead of deleting its rows (fleet/ops/retention.py).

`ensure_partitioned(conn, now)` is idempotent and safe with several instances (one advisory lock):
- a plain `telemetry` (what `generate_schemas` or a migration made, with or without rows) becomes a
  partitioned table of the same name and columns, keeping every row and its id sequence; its
  primary and unique keys get the partition key `at` appended (PostgreSQL requires it);
- the months from the current one to AHEAD_MONTHS ahead get their partition, and a DEFAULT
  partition takes any row no month partition holds: a device clock far off (year 1 to 9999), a
  month retention has dropped, a month whose partition was not created in time;
- a month partition created while DEFAULT holds rows of that month takes them over (moved in the
  same transaction, DEFAULT locked against writes meanwhile), so no row is left behind.

SQLite has none of this: its retention deletes rows (fleet/ops/retention.py).
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

AHEAD_MONTHS = 2  # months after the current one that have their partition before any row needs it
BACKFILL_MONTHS = 24  # converting a table: rows older than this many months stay in DEFAULT
LOCK_KEY = 0x666C_7061_7274  # pg_advisory_xact_lock: one partition maintainer at a time ("flpart")
LOCK_TIMEOUT = "5s"  # DDL waiting for readers longer than this gives up (tried again next run)
ROLLUP_TABLE = "partition_rollup"  # detached partitions whose roll-up is under way (fleet/ops/retention.py)


@dataclass(frozen=True)
class Spec:
    table: str
    key: str  # the partition key: a timestamptz column


# health is not partitioned: its only time is the arrival, which differs on a replay, so a unique
# key with it would no longer catch replays; events are read by `at` and expire by arrival.
TELEMETRY = Spec("telemetry", "at")
PARTITIONED = (TELEMETRY,)

_MONTH = re.compile(r"_p(\d{4})_(\d{2})$")


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return month.replace(year=index // 12, month=index % 12 + 1)


def partition_name(spec: Spec, month: datetime) -> str:
    return f"{spec.table}_p{month.year:04d}_{month.month:02d}"


def default_name(spec: Spec) -> str:
    return f"{spec.table}_default"


def month_of(spec: Spec, name: str) -> datetime | None:
    """The month a partition of `spec` holds, from its name; None for DEFAULT or another table."""
    found = _MONTH.search(name)
    if not name.startswith(spec.table + "_p") or found is None:
        return None
    return datetime(int(found.group(1)), int(found.group(2)), 1, tzinfo=UTC)


def _literal(moment: datetime) -> str:
    return "'" + moment.isoformat(" ") + "'"


async def _rows(conn: BaseDBAsyncClient, sql: str, values: list[Any] | None = None) -> list[dict[str, Any]]:
    return await conn.execute_query_dict(sql, values)


async def relkind(conn: BaseDBAsyncClient, table: str) -> str | None:
    """'r' plain, 'p' partitioned, None missing (in the current schema)."""
    rows = await _rows(conn, "SELECT c.relkind::text AS k FROM pg_class c WHERE c.relname = $1 "
                             "AND c.relnamespace = current_schema()::regnamespace", [table])
    return str(rows[0]["k"]) if rows else None


async def is_partitioned(conn: BaseDBAsyncClient, spec: Spec = TELEMETRY) -> bool:
    return conn.capabilities.dialect == "postgres" and await relkind(conn, spec.table) == "p"


async def partitions(conn: BaseDBAsyncClient, spec: Spec = TELEMETRY) -> list[str]:
    """The attached partitions' names, DEFAULT included, in name order."""
    rows = await _rows(conn, "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                             "WHERE i.inhparent = $1::regclass ORDER BY c.relname", [spec.table])
    return [str(r["name"]) for r in rows]


async def ensure_partitioned(conn: BaseDBAsyncClient, now: datetime, *, ahead: int = AHEAD_MONTHS) -> list[str]:
    """Make every table of PARTITIONED partitioned, with month partitions from `now`'s month to
    `ahead` months after it and a DEFAULT one. Returns the partitions it created (nothing when all
    were there). Each table in one transaction; PostgreSQL only."""
    created: list[str] = []
    for spec in PARTITIONED:
        async with conn._in_transaction() as tx:
            await tx.execute_query("SELECT pg_advisory_xact_lock($1)", [LOCK_KEY])
            await tx.execute_script(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await tx.execute_script(f"CREATE TABLE IF NOT EXISTS {ROLLUP_TABLE} (partition TEXT PRIMARY KEY, "
                                    "parent TEXT NOT NULL, device_id TEXT, at TIMESTAMPTZ, id BIGINT)")
            first = month_start(now)
            kind = await relkind(tx, spec.table)
            if kind is None:
                raise LookupError(f"table {spec.table} is missing: create the schema first")
            if kind == "r":
                oldest = await _convert(tx, spec, add_months(first, -BACKFILL_MONTHS))
                if oldest is not None:
                    first = min(first, month_start(oldest))
                created.append(default_name(spec))
            for step in range(_months_between(first, month_start(now)) + ahead + 1):
                if await create_month(tx, spec, add_months(first, step)):
                    created.append(partition_name(spec, add_months(first, step)))
            if kind == "r":
                await tx.execute_script(f"INSERT INTO {spec.table} SELECT * FROM {spec.table}_unpartitioned; "
                                        f"DROP TABLE {spec.table}_unpartitioned")
    return created


def _months_between(first: datetime, last: datetime) -> int:
    return (last.year * 12 + last.month) - (first.year * 12 + first.month)


async def _convert(tx: BaseDBAsyncClient, spec: Spec, since: datetime) -> datetime | None:
    """Rename the plain table aside (its rows are copied back by the caller once the partitions
    exist), create the partitioned one with the same columns, defaults, index names and id
    sequence, and its DEFAULT partition. The oldest `at` since `since` among the rows, None if none."""
    table, key, old = spec.table, spec.key, f"{spec.table}_unpartitioned"
    await tx.execute_script(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    indexes = await _rows(tx, """
        SELECT i.relname AS name, x.indisprimary AS primary, x.indisunique AS unique,
               con.conname IS NOT NULL AS constraint,
               array(SELECT a.attname::text FROM unnest(x.indkey) WITH ORDINALITY k(n, o)
                     JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n ORDER BY k.o) AS columns
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.conrelid = x.indrelid
        WHERE x.indrelid = $1::regclass ORDER BY i.relname""", [table])
    sequences = await _rows(tx, """
        SELECT a.attname::text AS col, pg_get_serial_sequence($1, a.attname) AS seq FROM pg_attribute a
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND pg_get_serial_sequence($1, a.attname) IS NOT NULL""", [table])
    await tx.execute_script(f"ALTER TABLE {table} RENAME TO {old}")
    for index in indexes:  # the names go to the new table (generate_schemas looks for them)
        if index["constraint"]:
            await tx.execute_script(f'ALTER TABLE {old} DROP CONSTRAINT "{index["name"]}"')
        else:
            await tx.execute_script(f'DROP INDEX "{index["name"]}"')
    await tx.execute_script(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) PARTITION BY RANGE ({key})")
    for row in sequences:
        await tx.execute_script(f"ALTER SEQUENCE {row['seq']} OWNED BY {table}.{row['col']}")
    for index in indexes:
        columns = list(index["columns"])
        if index["unique"] and key not in columns:
            columns.append(key)  # a unique key of a partitioned table must hold the partition key
        listed = ", ".join(f'"{c}"' for c in columns)
        name = index["name"]
        if index["primary"]:
            await tx.execute_script(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" PRIMARY KEY ({listed})')
        elif index["constraint"]:
            await tx.execute_script(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" UNIQUE ({listed})')
        else:
            unique = "UNIQUE " if index["unique"] else ""
            await tx.execute_script(f'CREATE {unique}INDEX "{name}" ON {table} ({listed})')
    await tx.execute_script(f"CREATE TABLE {default_name(spec)} PARTITION OF {table} DEFAULT")
    oldest = await _rows(tx, f"SELECT min({key}) AS t FROM {old} WHERE {key} >= $1", [since])
    moment = oldest[0]["t"]
    return moment if isinstance(moment, datetime) else None


async def create_month(tx: BaseDBAsyncClient, spec: Spec, month: datetime) -> bool:
    """Create the partition of `month` unless it exists, taking over the DEFAULT partition's rows
    of that month. Whether it was created. Run inside a transaction holding LOCK_KEY."""
    name = partition_name(spec, month)
    if await relkind(tx, name) is not None:
        return False
    table, key, default = spec.table, spec.key, default_name(spec)
    low, high = _literal(month), _literal(add_months(month, 1))
    # DEFAULT locked against writes until the attach: a row of this month written there meanwhile
    # would make the attach fail (and would be left behind)
    await tx.execute_script(f"LOCK TABLE {default} IN SHARE ROW EXCLUSIVE MODE")
    await tx.execute_script(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)")
    await tx.execute_script(f"ALTER TABLE {name} ADD CONSTRAINT {name}_range "
                            f"CHECK ({key} >= {low} AND {key} < {high})")  # the attach needs no scan of it
    await tx.execute_script(f"WITH moved AS (DELETE FROM {default} WHERE {key} >= {low} AND {key} < {high} "
                            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved")
    await tx.execute_script(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})")
    await tx.execute_script(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range")
    return True


async def detach_month(conn: BaseDBAsyncClient, spec: Spec, name: str) -> None:
    """Detach a month partition and record it for its roll-up, in one transaction: from then on a
    late row of that month lands in DEFAULT (rolled up by row there), never in the detached table."""
    async with conn._in_transaction() as tx:
        await tx.execute_query("SELECT pg_advisory_xact_lock($1)", [LOCK_KEY])
        await tx.execute_script(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        if name not in await partitions(tx, spec):
            return
        await tx.execute_query(f"INSERT INTO {ROLLUP_TABLE} (partition, parent) VALUES ($1, $2) "
                               "ON CONFLICT DO NOTHING", [name, spec.table])
        await tx.execute_script(f"ALTER TABLE {spec.table} DETACH PARTITION {name}")
