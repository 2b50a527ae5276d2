"""Batched writes for the ingest: one statement (or one pipelined executemany) per batch, not per row.

Tortoise builds a model instance and an UPDATE per `save()`; with a batch touching hundreds of
devices and streams that was most of the ingest's time (benchmarks/ingest_rate.py --backlog,
docs/fleet.md "Ingest throughput"). These helpers send the same SQL with the same values, only
in bulk, and take the stream locks that keep dedupe exact when several instances ingest at once.
"""

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.fields import JSONField
from tortoise.models import Model

StreamKey = tuple[str, int, int]  # (device id, epoch, ses)
SQLITE_KEYS_PER_QUERY = 300  # 3 parameters each: under SQLite's oldest limit of 999 variables
SQLITE_IDS_PER_QUERY = 900  # one parameter each
M = TypeVar("M", bound=Model)


def is_postgres(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


async def save_many(conn: BaseDBAsyncClient, instances: Sequence[Model], fields: Sequence[str]) -> None:
    """`instance.save(update_fields=fields)` for each, as one executemany: Tortoise's own UPDATE
    statement and its fields' own conversions, pipelined on asyncpg. A field's conversion depends on
    its value only, so each distinct value is converted once (the batch's time, a device's period);
    an auto_now field takes the save's time once for all the rows, as one save() of them all would."""
    if not instances:
        return
    model = type(instances[0])
    executor = conn.executor_class(model=model, db=conn)
    sql = executor.get_update_sql(list(fields), None)
    fields_map = model._meta.fields_map
    pk = model._meta.pk
    stamps: dict[str, Any] = {}
    for name in fields:
        if getattr(fields_map[name], "auto_now", False):
            stamps[name] = fields_map[name].to_db_value(None, instances[0])  # sets it on the instance
            moment = getattr(instances[0], name)
            for instance in instances[1:]:
                setattr(instance, name, moment)
    # auto_now_add converts None to the save's time, once per instance: not by value
    convert: list[tuple[str, Callable[[Any, Model], Any], dict[tuple[type, Any], Any] | None]] = [
        (name, fields_map[name].to_db_value, None if getattr(fields_map[name], "auto_now_add", False) else {})
        for name in fields]
    rows = []
    for instance in instances:
        row: list[Any] = []
        for name, to_db, converted in convert:
            if name in stamps:
                row.append(stamps[name])
                continue
            value = getattr(instance, name)
            if converted is None or isinstance(value, dict | list):  # a JSON document: converted each time
                row.append(to_db(value, instance))
                continue
            seen = (type(value), value)
            try:
                row.append(converted[seen])
            except KeyError:
                row.append(converted.setdefault(seen, to_db(value, instance)))
        row.append(pk.to_db_value(instance.pk, instance))
        rows.append(row)
    await conn.execute_many(sql, rows)


async def load_by_pk(conn: BaseDBAsyncClient, model: type[M], ids: Sequence[Any],
                     columns: Sequence[str] | None = None) -> list[M]:
    """`model.filter(pk__in=ids)` (with `columns`: `.only(*columns)`, partial instances, saved with
    `update_fields` only) in one raw query (chunks on SQLite), each column converted as Tortoise's
    `_init_from_db` converts it, without its query builder: an IN list of a thousand ids built
    by pypika, and a model instance per row built field by field, were most of a batch's time."""
    meta = model._meta
    pk = meta.db_pk_column
    partial = columns is not None
    columns = list(columns) if columns is not None else list(meta.db_fields)
    assert pk in columns, "an instance needs its primary key"
    converters: dict[str, Callable[[Any], Any] | None] = {}
    for key, _, _ in meta.db_native_fields:
        converters[key] = None
    for key, _, field in meta.db_default_fields:
        converters[key] = field.field_type
    for key, _, field in meta.db_complex_fields:
        converters[key] = field.to_python_value
    # a column's conversions by value (a status enum, a time), except a JSON document's: each row its own
    memos: dict[str, dict[Any, Any] | None] = {
        c: None if isinstance(meta.fields_map[meta.fields_db_projection_reverse[c]], JSONField) else {}
        for c in columns}
    convert = [(meta.fields_db_projection_reverse[c], c, converters[c], memos[c]) for c in columns]
    quoted = ", ".join(f'"{c}"' for c in columns)
    select = f'SELECT {quoted} FROM "{meta.db_table}" WHERE "{pk}"'
    rows: list[Any] = []
    if is_postgres(conn):
        if ids:
            rows.extend((await conn.execute_query(f"{select} = ANY($1)", [list(ids)]))[1])
    else:
        for start in range(0, len(ids), SQLITE_IDS_PER_QUERY):
            chunk = list(ids[start:start + SQLITE_IDS_PER_QUERY])
            rows.extend((await conn.execute_query(f"{select} IN ({', '.join('?' * len(chunk))})", chunk))[1])
    # what Model._init_from_db sets besides the fields
    state = {"_partial": partial, "_saved_in_db": True, "_custom_generated_pk": pk not in meta.generated_db_fields}
    instances = []
    for row in rows:
        instance = model.__new__(model)
        values = instance.__dict__
        values.update(state, _await_when_save={})
        for attr, column, converter, memo in convert:
            value = row[column]
            if converter is None or value is None:
                values[attr] = value
            elif memo is None:
                values[attr] = converter(value)
            else:
                seen = (type(value), value)
                values[attr] = memo[seen] if seen in memo else memo.setdefault(seen, converter(value))
        instances.append(instance)
    return instances


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
    return await _select_by_stream(conn, f"SELECT {STREAM_COLUMNS} FROM seq_stream WHERE", keys)


async def _select_by_stream(conn: BaseDBAsyncClient, select: str, keys: Sequence[StreamKey]) -> list[dict[str, Any]]:
    """`select` (a query ending in WHERE, or in a condition and AND) for the rows whose (device_id,
    epoch, ses) is one of `keys`: one query on PostgreSQL (`unnest` arrays), chunks on SQLite."""
    if is_postgres(conn):
        devices, epochs, sessions = _columns(keys)
        _, rows = await conn.execute_query(
            f"{select} (device_id, epoch, ses) IN (SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]))",
            [devices, epochs, sessions])
        return [dict(r) for r in rows]
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), SQLITE_KEYS_PER_QUERY):
        chunk = keys[start:start + SQLITE_KEYS_PER_QUERY]
        values = ", ".join(["(?, ?, ?)"] * len(chunk))
        _, rows = await conn.execute_query(f"{select} (device_id, epoch, ses) IN (VALUES {values})",
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


GAP_COLUMNS = "id, device_id, epoch, ses, first_seq, last_seq"
GapRow = tuple[str, int, int, int, int]  # (device_id, epoch, ses, first_seq, last_seq)


async def select_open_gaps(conn: BaseDBAsyncClient, keys: Sequence[StreamKey]) -> list[dict[str, Any]]:
    """The open seq_gap rows of `keys`, in one query (chunks on SQLite): where a batch's late
    messages go, read once for the batch rather than once per stream."""
    return await _select_by_stream(conn, f'SELECT {GAP_COLUMNS} FROM seq_gap WHERE "open" AND', keys)


async def insert_gaps(conn: BaseDBAsyncClient, rows: Sequence[GapRow], detected_at: datetime) -> None:
    """New open gaps, in one statement (PostgreSQL) or one executemany (SQLite). Two instances
    receiving one stream split it between them, and each batch then opens a gap per hole and fills
    the other's: a statement per gap made such a batch five times slower (docs/fleet.md)."""
    if not rows:
        return
    if is_postgres(conn):
        devices, epochs, sessions, firsts, lasts = (list(c) for c in zip(*rows, strict=True))
        await conn.execute_query(
            'INSERT INTO seq_gap (device_id, epoch, ses, first_seq, last_seq, detected_at, "open") '
            "SELECT d, e, s, f, l, $6, TRUE FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], "
            "$5::bigint[]) AS u(d, e, s, f, l)", [devices, epochs, sessions, firsts, lasts, detected_at])
        return
    from fleet.models import SeqGap
    await SeqGap.bulk_create([SeqGap(device_id=d, epoch=e, ses=s, first_seq=f, last_seq=la, detected_at=detected_at)
                              for d, e, s, f, la in rows], using_db=conn)


async def update_gaps(conn: BaseDBAsyncClient, rows: Sequence[tuple[int, int, int]]) -> None:
    """(id, first_seq, last_seq) of stored gaps that late messages shrank, split or closed (a gap
    whose first is past its last is closed: `open` false), in one statement (PostgreSQL)."""
    if not rows:
        return
    if is_postgres(conn):
        ids, firsts, lasts = (list(c) for c in zip(*rows, strict=True))
        await conn.execute_query(
            'UPDATE seq_gap AS g SET first_seq = u.f, last_seq = u.l, "open" = u.f <= u.l '
            "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, f, l) WHERE g.id = u.id",
            [ids, firsts, lasts])
        return
    await conn.execute_many('UPDATE seq_gap SET first_seq = ?, last_seq = ?, "open" = ? WHERE id = ?',
                            [[f, la, int(f <= la), i] for i, f, la in rows])


# the rows as one JSON document of arrays: one parameter, encoded by orjson in one call, where an
# array per column cost asyncpg a Python-level check per element (the batch's biggest encoding)
TELEMETRY_INSERT_PG = (
    "INSERT INTO telemetry (device_id, epoch, ses, seq, device_ts, received_at, at, role, readings) "
    "SELECT x->>0, (x->>1)::int, (x->>2)::bigint, (x->>3)::bigint, (x->>4)::bigint, $2, (x->>5)::timestamptz, "
    "x->>6, (x->7)::jsonb FROM json_array_elements($1::json) AS x "
    "ON CONFLICT DO NOTHING")


async def insert_telemetry_pg(conn: BaseDBAsyncClient, rows: Sequence[tuple[str, int, int, int, int | None,
                                                                             datetime, str, dict[str, Any]]],
                              received_at: datetime) -> None:
    """PostgreSQL: (device_id, epoch, ses, seq, device_ts, at, role, readings) rows in one statement,
    no model instances; a replay another instance stored already is skipped (ON CONFLICT without a
    target, so it works on the partitioned table too, whose unique key includes `at`). A naive time
    is UTC, as asyncpg reads one."""
    document = orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()
    await conn.execute_query(TELEMETRY_INSERT_PG, [document, received_at])


def _columns(keys: Iterable[StreamKey]) -> tuple[list[str], list[int], list[int]]:
    devices: list[str] = []
    epochs: list[int] = []
    sessions: list[int] = []
    for device_id, epoch, ses in keys:
        devices.append(device_id)
        epochs.append(epoch)
        sessions.append(ses)
    return devices, epochs, sessions
