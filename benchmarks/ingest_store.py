"""What one batch's store costs, without the broker: `apply_batch` on PostgreSQL, statement by statement.

Telemetry from N devices (benchmarks/loadgen.py's payloads, checked by the contract as the ingest
checks them) is stored in batches straight through fleet/ingest/store.py `apply_batch`, twice in
the same run on fresh databases:
- **whole**: each batch holds consecutive messages, as one instance receives them;
- **split**: the messages of two batches dealt out alternately, as a shared subscription's round
  robin hands them to two instances, so every stream is split between two batches: the first
  opens a gap per hole, the second fills them.

For each, it prints msg/s, this process's CPU per message (the fleet's side of the store) and the
PostgreSQL backend's CPU per message for each kind of statement (read from /proc around each
statement: one connection, one statement at a time), so a reader sees where a batch's time goes.
The figure to compare is split against whole: the same rows, the same machine, the same minute.

    .venv/bin/python benchmarks/ingest_store.py [--devices 1000] [--batch 2000] [--batches 10]
"""

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.connection import Connection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import numbered_payload

from contract import Upstream, parse_upstream
from fleet.db import database
from fleet.ingest import fastjson
from fleet.ingest.store import apply_batch
from fleet.settings import Settings

ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
TICK = os.sysconf("SC_CLK_TCK")
SES = 1_800_000_000


def backend_cpu_s(pid: int) -> float:
    """A PostgreSQL backend's user + system CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class StatementCpu:
    """Wraps asyncpg's query methods: per statement text, its count and the backend's CPU."""

    METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval")

    def __init__(self) -> None:
        self.on = False
        self.seen: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        for name in self.METHODS:
            setattr(Connection, name, self._wrap(getattr(Connection, name)))

    def _wrap(self, original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(conn: Connection, query: str, *args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return await original(conn, query, *args, **kwargs)
            pid = conn.get_server_pid()
            before = backend_cpu_s(pid)
            try:
                return await original(conn, query, *args, **kwargs)
            finally:
                entry = self.seen[" ".join(query.split())[:80]]
                entry[0] += 1
                entry[1] += backend_cpu_s(pid) - before
        return timed


def messages(devices: int, count: int, seqs: list[int]) -> list[Upstream]:
    out = []
    for _ in range(count):
        n = random.randrange(devices)
        out.append(parse_upstream(f"ioc/v1/d/store-{n:05d}/telemetry",
                                  numbered_payload("telemetry", SES, seqs[n], int(time.time() * 1000)),
                                  loads=fastjson.loads))
        seqs[n] += 1
    return out


async def measure(label: str, split: bool, args: argparse.Namespace, cpu: StatementCpu) -> None:
    name = f"bench_store_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        async with database(Settings(database_url=f"postgres://postgres@127.0.0.1:5432/{name}")):
            random.seed(20261201)
            seqs = [0] * args.devices
            await apply_batch(messages(args.devices, args.devices * 3, seqs))  # the devices and streams exist
            batches: list[list[Upstream]] = []
            for _ in range(args.batches // 2):
                both = messages(args.devices, 2 * args.batch, seqs)
                batches += [both[0::2], both[1::2]] if split else [both[:args.batch], both[args.batch:]]
            cpu.seen.clear()
            cpu.on = True
            started, process_started = time.perf_counter(), time.process_time()
            for batch in batches:
                await apply_batch(batch)
            wall, process = time.perf_counter() - started, time.process_time() - process_started
            cpu.on = False
            total = sum(len(b) for b in batches)
            server = sum(s for _, s in cpu.seen.values())
            print(f"{label}: {total / wall:,.0f} msg/s; fleet process {process / total * 1e6:.1f} µs/msg, "
                  f"PostgreSQL backend {server / total * 1e6:.1f} µs/msg, by statement:")
            for query, (calls, seconds) in sorted(cpu.seen.items(), key=lambda kv: -kv[1][1])[:args.top]:
                print(f"  {seconds / total * 1e6:5.1f} µs/msg  {int(calls):5d} calls  {query}")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=10, help="an even number: the split deals out two at a time")
    parser.add_argument("--top", type=int, default=8, help="statements listed per run")
    args = parser.parse_args()
    cpu = StatementCpu()
    print(f"apply_batch on PostgreSQL: {args.batches} batches of {args.batch} telemetry messages, "
          f"{args.devices} devices")
    await measure("whole (one instance's batches)", False, args, cpu)
    await measure("split (two instances' round robin)", True, args, cpu)


if __name__ == "__main__":
    asyncio.run(main())
