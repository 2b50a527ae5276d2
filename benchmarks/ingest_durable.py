"""Durable ingest under a burst, and under kills: how fast does a real `fleet serve` store what
devices send, against a bare C subscriber draining the same load, and is anything lost?
(issue 15, must-haves 1-4 and "Benchmarks")

Everything is real: a private Mosquitto per measurement (tests/support/mosquitto.py) configured as
docs/deploy.md says a deployment's should be for the fleet's session (BROKER_CONF: it keeps every
message for a persistent session that is away or behind, up to 1 GiB), `fleet serve` subprocesses
(FLEET_BROKER_ACCOUNTS=none: the private broker is open), a fresh SQLite file or a fresh
PostgreSQL database (tests/support/postgres.py) per measurement, and benchmarks/loadgen.py as the
devices (its raw asyncio publisher, several processes; QoS 1).

(a) Rate, `--rounds` times, medians printed:
  - baseline live: `mosquitto_sub -q 1 -c -i` (persistent session, C) drains the burst while it
    is published; its rate is first to last message (its own `%U` stamps);
  - fleet live: the same burst published as fast as the broker takes it into a running fleet;
    the rate is stored rows over time, from the first sample that saw a stored row to the sample
    that saw the last (rows counted in the database every 0.1 s);
  - baseline backlog: the burst published while mosquitto_sub's session is away, then drained;
  - fleet backlog: the fleet started once (its session made) and stopped (SIGTERM), the burst
    published, the fleet started again; stored rows over time as above, and the time from the
    start of `fleet serve` to the last row.
  After each fleet run: messages lost = what each device published (numbered messages, per
  seq) and is not stored; the fleet's recorded seq gaps; duplicates it dropped; refused messages.
(b) `--kills K`: the burst published at once while the fleet drains it; K times, at seeded
  random moments, the fleet (one instance at random) is SIGKILLed and started again at once with
  the same client id, without waiting for /healthz. Kill k comes at a random row count in the k-th
  of K + 1 equal slices of the load, then 0-50 ms, and never before the instance started after
  the previous kill has stored a row (so every kill hits an ingest at work; the last slice has
  none). Printed: lost, the fleet's duplicates dropped (seq_stream.duplicates), gaps, the time
  from the first publish to the last row stored.
(c) `--instances N`: N `fleet serve` instances with FLEET_MQTT_SHARED_GROUP, each its own
  FLEET_MQTT_CLIENT_ID and HTTP port (PostgreSQL only).

Exit 1 when any message is lost, a gap is recorded, or a message is refused.

    .venv/bin/python benchmarks/ingest_durable.py [--quick] [--messages 100000] [--rounds 3]
        [--db sqlite,postgres] [--kills 20 [--kill-seed N]] [--instances N] [--skip-rate]
        [loadgen options: --devices 1000 --mix telemetry=1 --processes 2 --connections 4 …]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import loadgen
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.postgres import fresh_database

ROOT = Path(__file__).resolve().parents[1]
# docs/deploy.md's broker lines for the fleet's session (persistence is tests/support/mosquitto.py's):
# keep every message for a session that is away or behind, up to 1 GiB (Mosquitto's default of
# 1,000 messages drops the rest of a burst).
BROKER_CONF = ("autosave_interval 60\nmax_queued_messages 0\nmax_queued_bytes 1073741824\n"
               "set_tcp_nodelay true\n")
STORED_TABLES = ("telemetry", "health", "event")
POLL_S = 0.1
T = TypeVar("T")


# --- the database, read from outside the fleet --------------------------------------------------

class Reader:
    """Counts and lists stored rows with plain SQL (sqlite3, or asyncpg on a loop of its own)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pg: asyncpg.Connection | None = None
        self._lock = threading.Lock()  # the sampler's thread and the main thread share the connection
        if url.startswith("sqlite://"):
            self.path = url.removeprefix("sqlite://")
        else:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="pg-reader", daemon=True).start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self._loop is None:
            if self._sqlite is None:
                if not os.path.exists(self.path):
                    return []
                self._sqlite = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            try:
                with self._lock:
                    return list(self._sqlite.execute(sql).fetchall())
            except sqlite3.OperationalError as err:
                if "no such table" in str(err) or "no such column" in str(err):
                    raise LookupError(str(err)) from err
                raise

        async def query() -> list[tuple[Any, ...]]:
            if self._pg is None:
                self._pg = await asyncpg.connect(self.url)
            try:
                return [tuple(r) for r in await self._pg.fetch(sql)]
            except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as err:
                raise LookupError(str(err)) from err
        with self._lock:  # the sampler's thread and the main thread share the connection
            return self._run(query())

    def stored(self) -> int:
        try:
            return int(self.rows(" + ".join(f"(SELECT count(*) FROM {t})" for t in STORED_TABLES).join(
                ("SELECT ", "")))[0][0])
        except LookupError:  # the fleet has not made its tables yet
            return 0

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._loop is not None:
            if self._pg is not None:
                self._run(self._pg.close())
            self._loop.call_soon_threadsafe(self._loop.stop)


class Sampler:
    """Stored rows every POLL_S seconds in a thread: (time.time(), count) samples."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.reader.stored()))
            self._stop.wait(POLL_S)

    @property
    def last(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def reaches(self, expected: int, stall_s: float, interval: float = POLL_S) -> bool:
        """Until `expected` rows are stored (True) or none came for `stall_s` seconds (False)."""
        last_count, last_change = -1, time.monotonic()
        while True:
            count = self.last
            if count >= expected:
                return True
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > stall_s:
                return False
            time.sleep(interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def rate(self) -> tuple[float, float, float]:
        """(msg/s from the first sample with rows to the first with the final count, first, last)."""
        final = max(c for _, c in self.samples)
        first = next((t, c) for t, c in self.samples if c > 0)
        last = next((t, c) for t, c in self.samples if c == final)
        seconds = max(last[0] - first[0], POLL_S)
        return (final - first[1]) / seconds, first[0], last[0]


# --- fleet serve -------------------------------------------------------------------------------

@dataclass
class Fleet:
    """`fleet serve` instances on one database and broker, started and killed by index."""

    workdir: Path
    database_url: str
    broker_url: str
    instances: int = 1
    tag: str = "bench"
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def env(self, index: int) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FLEET_DATABASE_URL": self.database_url,
               "FLEET_MQTT_URL": self.broker_url, "FLEET_MQTT_CLIENT_ID": f"fleet-{self.tag}-{index}",
               "FLEET_BROKER_ACCOUNTS": "none", "FLEET_SNAPSHOT_DIR": str(self.workdir / "snapshots"),
               "FLEET_OTA_DIR": str(self.workdir / "ota")}
        if self.instances > 1:
            env["FLEET_MQTT_SHARED_GROUP"] = f"fleet-{self.tag}"
        return env

    def log(self, index: int) -> Path:
        return self.workdir / f"fleet-{self.tag}-{index}.log"

    def spawn(self, index: int) -> subprocess.Popen[bytes]:
        while len(self.procs) <= index:
            self.procs.append(None)
            self.ports.append(free_port())
        with self.log(index).open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "serve", "--port", str(self.ports[index])],
                                    cwd=self.workdir, env=self.env(index), stdout=log, stderr=subprocess.STDOUT)
        self.procs[index] = proc
        return proc

    def wait_healthy(self, index: int, timeout: float = 120.0) -> None:
        proc = self.procs[index]
        assert proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"fleet serve {index} exited {proc.returncode}: "
                                   f"{self.log(index).read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.ports[index]}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"fleet serve {index} not healthy within {timeout} s")

    def start_all(self) -> None:
        """The first instance alone (it makes the schema: two `generate_schemas` at once on a fresh
        PostgreSQL database collide), then the others together."""
        self.spawn(0)
        self.wait_healthy(0)
        for i in range(1, self.instances):
            self.spawn(i)
        for i in range(1, self.instances):
            self.wait_healthy(i)

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    self.kill(i)

    def log_tail(self, pattern: Callable[[str], bool], lines: int = 15) -> list[str]:
        out = []
        for i in range(len(self.procs)):
            if self.log(i).exists():
                out += [f"[{i}] {line}" for line in self.log(i).read_text(errors="replace").splitlines()
                        if pattern(line)]
        return out[-lines:]


# --- loss ------------------------------------------------------------------------------------

@dataclass
class Verdict:
    published: int  # numbered messages
    stored: int
    lost: int
    missing: dict[str, list[int]]  # device -> seqs not stored
    unexpected: int  # stored rows that are not of this load (should be 0)
    gaps: list[tuple[Any, ...]]  # the fleet's open seq_gap rows
    duplicates: int | None  # the fleet's dropped duplicates (seq_stream.duplicates), None if unknown
    rejected: int

    def lines(self) -> list[str]:
        out = [f"  numbered messages published: {self.published:,}; stored rows: {self.stored:,}; "
               f"lost: {self.lost:,}; duplicates dropped by the fleet: "
               f"{'unknown' if self.duplicates is None else format(self.duplicates, ',')}; "
               f"seq gaps recorded: {len(self.gaps)}; refused: {self.rejected}"]
        if self.unexpected:
            out.append(f"  stored rows not of this load: {self.unexpected}")
        for device, seqs in list(sorted(self.missing.items()))[:10]:
            out.append(f"  lost {device}: {len(seqs)} seqs {ranges(seqs)}")
        for gap in self.gaps[:10]:
            out.append(f"  gap recorded: {gap}")
        return out

    @property
    def ok(self) -> bool:
        return not self.lost and not self.gaps and not self.rejected and not self.unexpected


def ranges(seqs: list[int]) -> str:
    out: list[str] = []
    for s in sorted(seqs):
        if out and out[-1].endswith(f"-{s - 1}"):
            out[-1] = out[-1].rsplit("-", 1)[0] + f"-{s}"
        elif out and out[-1] == str(s - 1):
            out[-1] = f"{s - 1}-{s}"
        else:
            out.append(str(s))
    return ", ".join(out[:8]) + (", …" if len(out) > 8 else "")


def verdict(reader: Reader, spec: loadgen.LoadSpec) -> Verdict:
    plans = {p.device_id: p for p in loadgen.plan(spec)}
    seen: dict[str, set[int]] = defaultdict(set)
    stored = unexpected = 0
    for table in STORED_TABLES:
        for device, ses, seq in reader.rows(f"SELECT device_id, ses, seq FROM {table}"):
            stored += 1
            p = plans.get(device)
            if p is None or ses != p.ses or not 0 <= seq < len(p.kinds) or p.kinds[seq] != table:
                unexpected += 1
            else:
                seen[device].add(int(seq))
    missing = {d: sorted(set(range(len(p.kinds))) - seen[d]) for d, p in plans.items()
               if len(seen[d]) != len(p.kinds)}
    gaps = reader.rows("SELECT device_id, epoch, ses, first_seq, last_seq FROM seq_gap WHERE open "
                       "ORDER BY device_id, ses, first_seq")
    try:
        duplicates: int | None = int(reader.rows("SELECT coalesce(sum(duplicates), 0) FROM seq_stream")[0][0])
    except LookupError:
        duplicates = None
    rejected = int(reader.rows("SELECT count(*) FROM rejected_message")[0][0])
    return Verdict(spec.messages, stored, sum(len(m) for m in missing.values()), missing, unexpected, gaps,
                   duplicates, rejected)


# --- one measurement -------------------------------------------------------------------------

@dataclass
class Measure:
    rate: float  # msg/s
    seconds: float  # first publish (or fleet start) to last row
    verdict: Verdict | None = None
    loadgen_rate: float = 0.0


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.runs = 0

    def spec(self, port: int, **changes: Any) -> loadgen.LoadSpec:
        self.runs += 1
        spec = loadgen.spec_from(self.args, port)
        return loadgen.LoadSpec(**{**asdict(spec), "ses": spec.ses + self.runs, **changes})

    def broker(self) -> Mosquitto:
        broker = Mosquitto(self.workdir / f"mqtt-{self.runs}-{time.monotonic_ns()}", extra_conf=BROKER_CONF)
        broker.start()
        return broker

    def baseline(self, backlog: bool) -> Measure:
        broker = self.broker()
        try:
            spec = self.spec(broker.port)
            sub = loadgen.BareSubscriber(broker.port, f"bare-{self.runs}", self.workdir)
            sub.make_session()
            total = loadgen.expected_total(spec)
            if backlog:
                result = loadgen.run(spec)
                sub.start(total)
            else:
                sub.start(total)
                result = loadgen.run(spec)
            got, first, last = sub.wait()
            if got != total:
                raise RuntimeError(f"mosquitto_sub received {got} of {total}")
            return Measure((got - 1) / max(last - first, 1e-9), last - (sub.started if backlog else result.first_send),
                           loadgen_rate=result.rate)
        finally:
            broker.kill()

    def fleet_run(self, database_url: str, backlog: bool) -> Measure:
        broker = self.broker()
        reader = Reader(database_url)
        fleet = Fleet(self.workdir, database_url, broker.url, self.args.instances, tag=f"r{self.runs}")
        try:
            spec = self.spec(broker.port)
            if backlog:
                fleet.start_all()  # makes the fleet's session at the broker
                fleet.stop_all()
                result = loadgen.run(spec)
                sampler = Sampler(reader)
                began = time.time()
                fleet.start_all()
            else:
                fleet.start_all()
                sampler = Sampler(reader)
                result = loadgen.run(spec)
                began = result.first_send
            complete = sampler.reaches(spec.messages, self.args.stall_s)
            sampler.stop()
            rate, _, last = sampler.rate()
            fleet.stop_all()
            v = verdict(reader, spec)
            if not complete or not v.ok:
                self.report_log(fleet)
            return Measure(rate, last - began, v, result.rate)
        finally:
            fleet.stop_all()
            reader.close()
            broker.kill()

    def kills(self, database_url: str, kills: int, seed: int) -> tuple[Verdict, float, list[str]]:
        rng = random.Random(seed)
        broker = self.broker()
        reader = Reader(database_url)
        fleet = Fleet(self.workdir, database_url, broker.url, self.args.instances, tag=f"k{self.runs}")
        notes: list[str] = []
        try:
            spec = self.spec(broker.port)
            fleet.start_all()
            sampler = Sampler(reader)
            load = loadgen.Load(spec)
            load.start()
            load.go()
            first_publish = time.time()
            results: list[loadgen.LoadResult] = []
            waiter = threading.Thread(target=lambda: results.append(load.wait()), name="loadgen-wait")
            waiter.start()
            # kill k in the k-th of kills + 1 equal slices of the load (rows stored), at a random
            # point of it, and only once the instance started after the previous kill has stored a row
            # (it is ingesting: the ingest runs before /healthz answers); the last slice has no kill
            slice_rows = spec.messages / (kills + 1)
            thresholds = [int((k + rng.random()) * slice_rows) for k in range(kills)]
            floor = 0
            for k, threshold in enumerate(thresholds, 1):
                if not sampler.reaches(max(threshold, floor + 1), self.args.stall_s, interval=0.005):
                    notes.append(f"kill {k}: no row stored for {self.args.stall_s:.0f} s below "
                                 f"{max(threshold, floor + 1):,}; no more kills")
                    print(notes[-1], flush=True)
                    break
                time.sleep(rng.uniform(0.0, 0.05))
                index = rng.randrange(fleet.instances)
                at = time.time() - first_publish
                fleet.kill(index)
                floor = reader.stored()
                fleet.spawn(index)
                notes.append(f"kill {k:2d} of instance {index} at {at:6.2f} s (planned at {threshold:,} rows; "
                             f"{floor:,} stored when it died); restarted at once")
                print(notes[-1], flush=True)
            for i in range(fleet.instances):
                fleet.wait_healthy(i)
            waiter.join()
            complete = sampler.reaches(spec.messages, self.args.stall_s)
            sampler.stop()
            _, _, last = sampler.rate()
            fleet.stop_all()
            v = verdict(reader, spec)
            if not complete or not v.ok:
                self.report_log(fleet)
            notes.append(results[0].line() if results else "loadgen: no result")
            return v, last - first_publish, notes
        finally:
            fleet.stop_all()
            reader.close()
            broker.kill()

    def report_log(self, fleet: Fleet) -> None:
        lines = fleet.log_tail(lambda s: any(w in s for w in ("ERROR", "WARNING", "Traceback", "rror:")))
        if lines:
            print("  the fleet's log (errors and warnings, last 15):", *lines, sep="\n    ", flush=True)


# --- main ------------------------------------------------------------------------------------

def database(backend: str, workdir: Path, name: str) -> Any:
    """A context manager yielding a fresh database URL."""
    if backend == "postgres":
        return _pg()
    return _sqlite(workdir / f"{name}.sqlite3")


class _sqlite:
    def __init__(self, path: Path) -> None:
        self.url = f"sqlite://{path}"

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        pass


class _pg:
    """tests/support/postgres.py's fresh_database, entered from synchronous code."""

    def __enter__(self) -> str:
        self._cm = fresh_database()
        self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self._cm.__aenter__())

    def __exit__(self, *exc: object) -> None:
        self._loop.run_until_complete(self._cm.__aexit__(None, None, None))
        self._loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 messages, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL a fleet instance this many times")
    parser.add_argument("--kill-seed", type=int, default=None, help="of the kill moments (default random, printed)")
    parser.add_argument("--instances", type=int, default=1, help="fleet instances (shared subscription)")
    parser.add_argument("--skip-rate", action="store_true", help="only the kills")
    parser.add_argument("--stall-s", type=float, default=60.0, help="give up when no row is stored this long")
    loadgen.arguments(parser)
    parser.set_defaults(mix={"telemetry": 1})
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = 20_000, 1
    backends = [b.strip() for b in args.db.split(",") if b.strip()]
    if args.instances > 1 and backends != ["postgres"]:
        raise SystemExit("ingest_durable: --instances > 1 needs --db postgres")
    if args.kill_seed is None:
        args.kill_seed = random.SystemRandom().randrange(1_000_000)
    mix = ",".join(f"{k}={v}" for k, v in args.mix.items())
    print(f"{args.messages:,} numbered QoS 1 messages ({mix}) from {args.devices} devices, each with a retained "
          f"birth and death; loadgen {args.processes} processes x {args.connections} connections; "
          f"{args.instances} fleet instance(s); {loadgen.load_average()}", flush=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-durable-") as tmp:
        bench = Bench(args, Path(tmp))
        if not args.skip_rate:
            figures: dict[str, list[float]] = defaultdict(list)
            for r in range(args.rounds):
                for backlog in (False, True):
                    mode = "backlog" if backlog else "live"
                    base = bench.baseline(backlog)
                    figures[f"baseline {mode}"].append(base.rate)
                    print(f"round {r + 1} {mode}: mosquitto_sub {base.rate:,.0f} msg/s (loadgen "
                          f"{base.loadgen_rate:,.0f} msg/s); {loadgen.load_average()}", flush=True)
                    for backend in backends:
                        with database(backend, Path(tmp), f"rate-{r}-{mode}") as url:
                            m = bench.fleet_run(url, backlog)
                        assert m.verdict is not None
                        figures[f"{backend} {mode}"].append(m.rate)
                        figures[f"{backend} {mode} ratio"].append(m.rate / base.rate)
                        figures[f"{backend} {mode} seconds"].append(m.seconds)
                        print(f"round {r + 1} {mode}: fleet on {backend} {m.rate:,.0f} msg/s = "
                              f"{m.rate / base.rate:.2f} of mosquitto_sub; all stored {m.seconds:.1f} s after "
                              f"{'the fleet started' if backlog else 'the first publish'} (loadgen "
                              f"{m.loadgen_rate:,.0f} msg/s); {loadgen.load_average()}", flush=True)
                        print(*m.verdict.lines(), sep="\n", flush=True)
                        failed |= not m.verdict.ok
            print(f"\nmedians of {args.rounds} round(s), {args.messages:,} messages ({mix}), {args.devices} devices:")
            for mode in ("live", "backlog"):
                print(f"  {mode}: mosquitto_sub -q 1 -c: {statistics.median(figures[f'baseline {mode}']):,.0f} msg/s")
                for backend in backends:
                    print(f"  {mode}: fleet on {backend:8s}: {statistics.median(figures[f'{backend} {mode}']):,.0f} "
                          f"msg/s, {statistics.median(figures[f'{backend} {mode} ratio']):.2f} of mosquitto_sub; "
                          f"all stored in {statistics.median(figures[f'{backend} {mode} seconds']):.1f} s")
            print(f"  ({loadgen.load_average()})", flush=True)
        if args.kills:
            for backend in backends:
                print(f"\n{args.kills} SIGKILLs on {backend}, seed {args.kill_seed}:", flush=True)
                with database(backend, Path(tmp), "kills") as url:
                    v, seconds, notes = bench.kills(url, args.kills, args.kill_seed)
                print(notes[-1])
                print(f"kills on {backend}: all stored {seconds:.1f} s after the first publish; "
                      f"{loadgen.load_average()}")
                print(*v.lines(), sep="\n", flush=True)
                failed |= not v.ok
    print("LOSS OR REFUSAL: exit 1" if failed else "nothing lost", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
