"""Several fleet instances ingest the same device streams at once (a shared subscription hands
one stream's messages to different instances): each message is stored once, and every stream's
counts and gaps are exact (docs/fleet.md, "Dedupe and gaps"). On PostgreSQL, three concurrent
transactions on three pooled connections apply overlapping batches: duplicates, out of order,
interleaved. Without the stream locks the instances read the same seq_stream row and the last
writer wins (received, duplicates and gaps come out wrong)."""

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contract import Upstream, parse_upstream
from fleet.db import database
from fleet.ingest.store import apply_batch
from fleet.models import SeqGap, SeqStream, TelemetryRecord
from fleet.settings import Settings
from tests.support.postgres import fresh_database

DEVICES = 4
SEQS = 150  # numbered messages per stream
INSTANCES = 3
BATCH = 40
SES = 11


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[None]:
    async with fresh_database() as url, database(Settings(database_url=url)):
        yield


def telemetry(device: int, seq: int) -> Upstream:
    body = {"v": 1, "ses": SES, "seq": seq, "ts": 1795766400000 + seq, "role": "sim", "r": {"t": seq}}
    return parse_upstream(f"ioc/v1/d/conc-{device}/telemetry", json.dumps(body).encode())


@pytest.mark.postgres
async def test_instances_sharing_streams_store_each_message_once_with_exact_counts(db: None) -> None:
    rnd = random.Random(15)
    sent: Counter[tuple[int, int]] = Counter()  # (device, seq) -> deliveries
    shares: list[list[Upstream]] = [[] for _ in range(INSTANCES)]
    for device in range(DEVICES):
        missing = set(rnd.sample(range(SEQS - 1), 12))  # never sent: the gaps (the last one is sent)
        for seq in range(SEQS):
            if seq in missing:
                continue
            # each instance gets it with probability 1/2 (at least one does): duplicates across instances
            takers = [i for i in range(INSTANCES) if rnd.random() < 0.5] or [rnd.randrange(INSTANCES)]
            for i in takers:
                shares[i].append(telemetry(device, seq))
                sent[device, seq] += 1
    for share in shares:  # each instance sees its messages out of order, every stream interleaved
        rnd.shuffle(share)

    async def instance(share: list[Upstream]) -> None:
        for start in range(0, len(share), BATCH):
            await apply_batch(share[start:start + BATCH])

    await asyncio.gather(*(instance(share) for share in shares))

    for device in range(DEVICES):
        delivered = {seq for d, seq in sent if d == device}
        deliveries = sum(n for (d, _), n in sent.items() if d == device)
        device_id = f"conc-{device}"
        rows = await TelemetryRecord.filter(device_id=device_id).values_list("seq", flat=True)
        assert sorted(rows) == sorted(delivered)  # every message stored once
        stream = await SeqStream.get(device_id=device_id, ses=SES)
        assert (stream.received, stream.duplicates, stream.max_seq) == (
            len(delivered), deliveries - len(delivered), SEQS - 1)
        open_gaps = await SeqGap.filter(device_id=device_id, ses=SES, open=True)
        in_gaps = [n for gap in open_gaps for n in range(gap.first_seq, gap.last_seq + 1)]
        assert sorted(in_gaps) == sorted(set(range(SEQS)) - delivered)  # exactly the missing numbers
