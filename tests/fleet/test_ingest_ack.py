"""Acknowledgement after commit (issue 15, must-have 1; docs/fleet.md "Acknowledgement after
commit"): the fleet acknowledges a message to the broker only once the transaction that stores
it has committed, so a SIGKILL at any moment loses nothing: the broker sends again what was not
acknowledged, and dedupe drops what had been stored.

Real `fleet serve` processes (SIGKILLed), a private Mosquitto holding the fleet's MQTT 5 session,
SQLite and PostgreSQL; a PostgreSQL database made unavailable with ALLOW_CONNECTIONS false.
"""

import asyncio
import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path

import asyncpg
import httpx

from fleet.db import database
from fleet.ingest.link import MqttLink, RawMessage
from fleet.ingest.service import Ingest
from fleet.ingest.stats import IngestStats
from fleet.settings import MqttTarget, Settings
from tests.fleet.test_relay_kill import ROOT, serve
from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.postgres import PG_HOST, PG_PORT, PG_USER
from tests.support.wait import async_wait_for, wait_for

DEVICES = 3
KILLS = 3
STRIDE = 30  # a fleet is killed once it has stored this many more messages than when it started
DEADLINE_S = 90.0


async def stored_telemetry(database_url: str) -> list[tuple[str, int]]:
    """(device, seq) of every telemetry row, read by the test itself (not through the fleet)."""
    query = "SELECT device_id, seq FROM telemetry"
    if database_url.startswith("sqlite://"):
        with closing(sqlite3.connect(database_url.removeprefix("sqlite://"))) as conn:
            return [(str(d), int(s)) for d, s in conn.execute(query).fetchall()]
    conn = await asyncpg.connect(database_url)
    try:
        return [(str(r["device_id"]), int(r["seq"])) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def gap_rows(database_url: str) -> int:
    query = "SELECT count(*) FROM seq_gap"
    if database_url.startswith("sqlite://"):
        with closing(sqlite3.connect(database_url.removeprefix("sqlite://"))) as conn:
            return int(conn.execute(query).fetchone()[0])
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


def fleet_env(tmp_path: Path, database_url: str, mqtt_url: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "FLEET_DATABASE_URL": database_url,
            "FLEET_MQTT_URL": mqtt_url, "FLEET_MQTT_CLIENT_ID": f"fleet-ack-{uuid.uuid4().hex[:8]}",
            "FLEET_BROKER_ACCOUNTS": "none", "FLEET_SNAPSHOT_DIR": str(tmp_path / "snapshots"),
            "FLEET_OPS_TICK_S": "60"}


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def expected(ids: list[str], per_device: int) -> list[tuple[str, int]]:
    return sorted((device, seq) for device in ids for seq in range(per_device))


async def test_sigkilled_again_and_again_mid_stream_every_message_is_stored_once(
        tmp_path: Path, database_url: str, keeping_broker: Mosquitto) -> None:
    env = fleet_env(tmp_path, database_url, keeping_broker.url)
    port = free_port()
    proc = serve(tmp_path, env, port)
    ids = [f"t-ack-{uuid.uuid4().hex[:6]}-{n}" for n in range(DEVICES)]
    devices = [ScriptedDevice(keeping_broker.port, device_id, ses=7, will=False) for device_id in ids]
    sent = [0] * DEVICES  # per device: seqs 0 .. sent-1 were published (the broker has them)
    done = threading.Event()

    def publish() -> None:  # round robin, steadily, until the kills are over
        seq = 0
        while not done.is_set():
            for n, device in enumerate(devices):
                device.telemetry(seq, lux=float(seq))
                sent[n] = seq + 1
            seq += 1
            time.sleep(0.005)

    publisher = threading.Thread(target=publish, name="publisher")
    publisher.start()
    postgres = database_url.startswith("postgres://")
    try:
        for k in range(KILLS + 1):
            # mid-ingest: this fleet is storing (the backlog of its downtime, then the stream)
            at_start = len(await stored_telemetry(database_url))
            await async_wait_for(lambda n=at_start: _more_than(database_url, n + STRIDE), timeout=DEADLINE_S,
                                 interval=0.02, what=f"fleet {k + 1} storing")
            if k == KILLS:
                break
            if postgres and k == 1:  # this one dies while its database is down, holding what it received
                await set_connections(database_url, allowed=False)
                received, _ = taken(port)

                def holding(base: float = received) -> bool:  # its batch waits; more has come in since
                    now, retries = taken(port)
                    return retries >= 1 and now - base >= STRIDE

                await asyncio.to_thread(wait_for, holding, timeout=DEADLINE_S, interval=0.05,
                                        what="the fleet holding messages while the database is down")
                kill(proc)
                await set_connections(database_url, allowed=True)
            else:
                kill(proc)
            proc = serve(tmp_path, env, port)  # the same client id: the broker's session for it
        done.set()
        await asyncio.to_thread(publisher.join, DEADLINE_S)
        want = sorted((device_id, seq) for device_id, count in zip(ids, sent, strict=True) for seq in range(count))
        await async_wait_for(lambda: _all_stored(database_url, len(want)), timeout=DEADLINE_S, interval=0.1,
                             what="every message stored")
        assert sorted(await stored_telemetry(database_url)) == want  # once each: none lost, none twice
        assert await gap_rows(database_url) == 0  # nothing ever went missing, even for a while
        stop(proc)
    finally:
        done.set()
        for device in devices:
            device.close()
        if proc.poll() is None:
            kill(proc)
        if postgres:
            await set_connections(database_url, allowed=True)


async def _more_than(database_url: str, count: int) -> bool:
    return len(await stored_telemetry(database_url)) > count


async def _all_stored(database_url: str, count: int) -> bool:
    return len(await stored_telemetry(database_url)) >= count


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def taken(port: int) -> tuple[float, float]:
    """(messages the fleet has received: taken in batches or queued, store retries) from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return (metric(text, "fleet_ingest_received_total") + metric(text, "fleet_ingest_queue_depth"),
            metric(text, "fleet_ingest_store_retries_total"))


async def set_connections(database_url: str, allowed: bool) -> None:
    """Make the database refuse (and drop) every connection, or take them again: the database is
    down for the fleet, the server is up for the test."""
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
        if not allowed:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await admin.close()


async def _take(link: MqttLink, count: int) -> list[RawMessage]:
    taken: list[RawMessage] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(taken) < count and time.monotonic() < deadline:
        taken += await link.take(count - len(taken), 0.2)
    assert len(taken) == count, f"{len(taken)} of {count} came"
    return taken


async def test_a_batch_stored_but_not_acknowledged_comes_again_and_is_counted_as_duplicates(
        tmp_path: Path, database_url: str, keeping_broker: Mosquitto) -> None:
    """A crash between the commit and the acknowledgement, made exact: the batch is stored, the
    link disconnects without acknowledging; the next connection of the same session gets every
    message again, and the ingest counts them as duplicates, stores none twice, and acknowledges
    them, so a third connection gets only what came after."""
    count = 40
    client_id = f"fleet-redeliver-{uuid.uuid4().hex[:6]}"
    target = MqttTarget(keeping_broker.url)
    settings = Settings(database_url=database_url, mqtt_url=keeping_broker.url, snapshot_dir=tmp_path / "snapshots")
    async with database(settings):
        async with MqttLink(target, client_id=client_id, queue_max=1000) as link:  # the session is made
            pass
        device = ScriptedDevice(keeping_broker.port, f"t-redeliver-{uuid.uuid4().hex[:6]}", ses=9, will=False)
        try:
            for seq in range(count):
                device.telemetry(seq, lux=2.0)
            first = IngestStats()
            async with MqttLink(target, client_id=client_id, queue_max=1000) as link:
                stored = await _take(link, count)
                await Ingest(link, first, batch_max=1000, batch_wait_ms=50, rejected_keep=100).process(stored)
                assert link.acked == 0  # stored; not acknowledged: the crash
            assert first.stored == count

            again = IngestStats()
            async with MqttLink(target, client_id=client_id, queue_max=1000) as link:
                batch = await _take(link, count)
                assert [m.payload for m in batch] == [m.payload for m in stored]  # all again, in order
                await Ingest(link, again, batch_max=1000, batch_wait_ms=50, rejected_keep=100).process(batch)
                link.ack(batch)
                assert link.acked == count
            assert (again.stored, again.duplicates) == (0, count)

            device.telemetry(count, lux=3.0)  # published while the fleet is away: queued for its session
            async with MqttLink(target, client_id=client_id, queue_max=1000) as link:
                [only] = await _take(link, 1)
                assert b'"seq": %d' % count in only.payload  # the acknowledged ones did not come a third time
                link.ack([only])
            rows = await stored_telemetry(database_url)
            assert sorted(seq for _, seq in rows) == list(range(count))  # the last one was never stored
        finally:
            device.close()
