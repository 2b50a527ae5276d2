"""Batched writes for the ingest: one statement (or one pipelined executemany) per batch, not per row.

Tortoise builds a model instance and an UPDATE per `save()`; with a batch touching hundreds of
devices and streams that was most of the ingest's time (benchmarks/ingest_rate.py --backlog,
docs/fleet.md "Ingest throughput"). These helpers send the same SQL with the same values, only
in bulk, and take the stream locks that keep dedupe exact when several instances ingest at once.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

StreamKey = tuple[str, int, int]  # (device id, epoch, ses)
SQLITE_KEYS_PER_QUERY = 300  # 3 parameters each: under SQLite's oldest limit of 999 variables


def is_postgres(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


async def save_many(conn: BaseDBAsyncClient, instances: Sequence[Model], fields: Sequence[str]) -> None:
    """`instance.save(update_fields=fields)` for each, as one executemany: Tortoise's own UPDATE
    statement and its fields' own conversions (auto_now included), pipelined on asyncpg."""
    if not instances:
        return
    model = type(instances[0])
    executor = conn.executor_class(model=model, db=conn)
    sql = executor.get_update_sql(list(fields), None)
    fields_map = model._meta.fields_map
    pk = model._meta.pk
    rows = [[fields_map[name].to_db_value(getattr(instance, name), instance) for name in fields]
            + [pk.to_db_value(instance.pk, instance)] for instance in instances]
    await conn.execute_many(sql, rows)


async def lock_streams(conn: BaseDBAsyncClient, keys: Iterable[StreamKey]) -> None:
    """PostgreSQL: take the streams' transaction-scoped advisory locks, in one sorted order (two
    instances locking overlapping batches never deadlock). Another instance's transaction holding
    one of them is waited for, so its seq_stream and seq_gap writes are read after its commit.
    SQLite needs none: one writer at a time (docs/fleet.md, "Dedupe and gaps")."""
    if not is_postgres(conn):
        return
    devices, epochs, sessions = _columns(keys)
    if not devices:
        return
    # PostgreSQL evaluates a volatile function of the select list after the ORDER BY (9.6 and later)
    await conn.execute_query(
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(d || '/' || e || '/' || s, 0) AS k "
        "FROM unnest($1::text[], $2::int[], $3::bigint[]) AS u(d, e, s)) AS keys ORDER BY k",
        [devices, epochs, sessions])


STREAM_COLUMNS = "id, device_id, epoch, ses, max_seq, received"


async def select_streams(conn: BaseDBAsyncClient, keys: Sequence[StreamKey]) -> list[dict[str, Any]]:
    """The seq_stream rows of `keys`, in one query (chunks on SQLite)."""
    if is_postgres(conn):
        devices, epochs, sessions = _columns(keys)
        _, rows = await conn.execute_query(
            f"SELECT {STREAM_COLUMNS} FROM seq_stream WHERE (device_id, epoch, ses) IN "
            "(SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]))", [devices, epochs, sessions])
        return [dict(r) for r in rows]
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), SQLITE_KEYS_PER_QUERY):
        chunk = keys[start:start + SQLITE_KEYS_PER_QUERY]
        values = ", ".join(["(?, ?, ?)"] * len(chunk))
        _, rows = await conn.execute_query(
            f"SELECT {STREAM_COLUMNS} FROM seq_stream WHERE (device_id, epoch, ses) IN (VALUES {values})",
            [v for key in chunk for v in key])
        found.extend(dict(r) for r in rows)
    return found


async def update_streams(conn: BaseDBAsyncClient, rows: Sequence[tuple[int, int, int, int]],
                         now: datetime) -> None:
    """(id, max_seq, received, duplicates) of existing streams: the counts are added to the stored ones."""
    if not rows:
        return
    if is_postgres(conn):
        ids, max_seqs, received, duplicates = (list(c) for c in zip(*rows, strict=True))
        await conn.execute_query(
            "UPDATE seq_stream AS s SET max_seq = u.max_seq, received = s.received + u.received, "
            "duplicates = s.duplicates + u.duplicates, last_at = $5 "
            "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) "
            "AS u(id, max_seq, received, duplicates) "
            "WHERE s.id = u.id", [ids, max_seqs, received, duplicates, now])
        return
    from fleet.models import SeqStream
    last_at = SeqStream._meta.fields_map["last_at"].to_db_value(now, SeqStream)
    await conn.execute_many(
        "UPDATE seq_stream SET max_seq = ?, received = received + ?, duplicates = duplicates + ?, last_at = ? "
        "WHERE id = ?", [[m, r, d, last_at, i] for i, m, r, d in rows])


TELEMETRY_INSERT_PG = (
    "INSERT INTO telemetry (device_id, epoch, ses, seq, device_ts, received_at, at, role, readings) "
    "SELECT d, e, s, q, t, $6, a, r, j::jsonb FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], "
    "$5::bigint[], $7::timestamptz[], $8::text[], $9::text[]) AS u(d, e, s, q, t, a, r, j) "
    "ON CONFLICT DO NOTHING")


async def insert_telemetry_pg(conn: BaseDBAsyncClient, rows: Sequence[tuple[str, int, int, int, int | None,
                                                                             datetime, str, dict[str, Any]]],
                              received_at: datetime) -> None:
    """PostgreSQL: (device_id, epoch, ses, seq, device_ts, at, role, readings) rows in one statement,
    no model instances; a replay another instance stored already is skipped (ON CONFLICT without a
    target, so it works on the partitioned table too, whose unique key includes `at`)."""
    columns: list[list[Any]] = [[], [], [], [], [], [], [], []]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    columns[7] = [orjson.dumps(r).decode() for r in columns[7]]
    await conn.execute_query(TELEMETRY_INSERT_PG, [*columns[:5], received_at, *columns[5:]])


def _columns(keys: Iterable[StreamKey]) -> tuple[list[str], list[int], list[int]]:
    devices: list[str] = []
    epochs: list[int] = []
    sessions: list[int] = []
    for device_id, epoch, ses in keys:
        devices.append(device_id)
        epochs.append(epoch)
        sessions.append(ses)
    return devices, epochs, sessions
