"""Fuzzing the ingest (issue 8): Hypothesis over the contract's parsers, and generated traffic
through a real Mosquitto into a running fleet with every message accounted for: 100,000 messages
on SQLite (about 30 s here), 10,000 on PostgreSQL.
"""

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import ContractError, parse_downstream, parse_upstream, strict_json
from contract.errors import RejectReason
from fleet.models import EventRecord, HealthRecord, TelemetryRecord
from fleet.runtime import Runtime
from tests.fleet.fuzz_messages import Expectation, Traffic
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.postgres import fresh_database

REASONS: set[RejectReason] = {"bad_topic", "bad_json", "invalid", "oversized", "unsupported_version"}
SUFFIXES = ["health", "telemetry", "event", "birth", "death", "cmd/result", "state/reported", "ota/progress",
            "child/cam-1/health", "cmd", "state/desired", "x", ""]

# JSON-like values, with the values the contract must refuse mixed in
leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
          | st.text(st.characters(exclude_categories=()), max_size=20))  # surrogates too
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)
topics = st.one_of(
    st.builds(lambda d, s: f"ioc/v1/d/{d}/{s}", st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}", fullmatch=True),
              st.sampled_from(SUFFIXES)),
    st.text(max_size=60),
)
ENVELOPE = {"v": 1, "ses": 1, "seq": 1, "ts": None}


def _encode(value: Any, how: str) -> bytes:
    if how == "ascii":  # lone surrogates escaped as \udxxx, NaN as NaN
        return json.dumps(value).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")  # surrogates as raw bytes


def _refused_properly(call: Any) -> Any:
    """Run a parser: it returns, or raises ContractError with a known reason and a reason text."""
    try:
        return call()
    except ContractError as err:
        assert err.reason in REASONS and str(err)
        return None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, payload=st.binary(max_size=300))
def test_parse_upstream_on_arbitrary_bytes_raises_only_contract_errors(topic: str, payload: bytes) -> None:
    _refused_properly(lambda: parse_upstream(topic, payload))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, extra=st.dictionaries(st.sampled_from(["ses", "seq", "ts", "v", "up_s", "fw", "role", "r",
                                                              "id", "type", "phase", "category", "data",
                                                              "status", "detail", "kind", "roles", "boot",
                                                              "period_s", "next_seq", "release", "pct",
                                                              "reason", "version", "x"]), json_values, max_size=8),
       how=st.sampled_from(["ascii", "raw"]))
def test_parse_upstream_on_message_shaped_json(topic: str, extra: dict[str, Any], how: str) -> None:
    payload = _encode({**ENVELOPE, **extra}, how)
    message = _refused_properly(lambda: parse_upstream(topic, payload))
    if message is not None:  # what is accepted can be stored and served as strict JSON
        # (strict_json.dumps itself also refuses integers of 2^53 or more: a rule for what the fleet
        # sends devices; a device's own extra fields may hold one)
        assert strict_json.problem(message.body) is None
        assert message.seq is None or (isinstance(message.seq, int) and message.seq >= 0)


@settings(max_examples=500, deadline=None)
@given(depth=st.integers(min_value=1, max_value=5000), opener=st.sampled_from([b"[", b'{"a":']))
def test_nesting_of_any_depth_is_refused_or_accepted_never_a_crash(depth: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    payload = opener * depth + (b"" if opener == b"[" else b"1") + closer * depth
    try:
        strict_json.loads(payload)
    except ContractError as err:
        assert depth > strict_json.MAX_DEPTH or err.reason == "bad_json"
    else:
        assert depth <= strict_json.MAX_DEPTH


@settings(max_examples=800, deadline=None)
@given(value=json_values, kind=st.sampled_from(["cmd", "state_desired"]), how=st.sampled_from(["ascii", "raw"]))
def test_parse_downstream_raises_only_contract_errors(value: Any, kind: str, how: str) -> None:
    _refused_properly(lambda: parse_downstream(kind, _encode(value, how)))


@settings(max_examples=800, deadline=None)
@given(value=json_values)
def test_what_strict_json_writes_it_reads_back(value: Any) -> None:
    try:
        data = strict_json.dumps(value)
    except ContractError as err:
        assert err.reason == "invalid"
        return
    assert strict_json.loads(data) == json.loads(data)


# through a real broker --------------------------------------------------------------------------
WINDOW = 4000  # at most this many messages between the publisher and the fleet (the broker's queue is 10,000)


async def _run_traffic(database_url: str, mosquitto: Mosquitto, count: int, seed: int) -> dict[str, Any]:
    settings = fleet_settings(database_url, mosquitto.url)
    expect = Expectation()
    async with running_fleet(settings) as http:
        runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
        stats = runtime.stats
        sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fuzz-{seed}")
        sender.max_queued_messages_set(0)
        sender.connect("127.0.0.1", mosquitto.port)
        sender.loop_start()
        started = time.monotonic()
        try:
            last = None
            for topic, payload in itertools.islice(Traffic(seed), count):
                expect.feed(topic, payload)
                last = sender.publish(topic, payload, qos=1)
                if expect.counts["sent"] % 500 == 0:
                    while expect.counts["sent"] - stats.received > WINDOW:  # noqa: ASYNC110 (polls counters)
                        await asyncio.sleep(0.02)
            assert last is not None
            await asyncio.to_thread(last.wait_for_publish, 120)
            deadline = time.monotonic() + max(120.0, count / 100)
            while stats.accounted() < count and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - started
        finally:
            sender.loop_stop()
            sender.disconnect()
        health = await http.get("/healthz")
        rows = {"health": await HealthRecord.all().count(), "telemetry": await TelemetryRecord.all().count(),
                "event": await EventRecord.all().count()}
        api_stats = (await http.get("/api/ingest/stats")).json()
        return {"expect": expect.counts, "stats": api_stats, "accounted": stats.accounted(), "rows": rows,
                "health": health, "restarts": runtime.supervisor.restarts, "elapsed": elapsed}


def _check(result: dict[str, Any], count: int) -> None:
    expect, stats = result["expect"], result["stats"]
    assert expect["sent"] == count
    assert stats["received"] == count, "every message sent reached the ingest"
    assert result["accounted"] == count, "every message landed in exactly one counter"
    assert stats["batch_errors"] == 0 and result["restarts"] == 0
    assert stats["stored"] == expect["stored"]
    assert stats["duplicates"] == expect["duplicates"]
    assert stats["presence"] == expect["presence"]
    assert stats["reserved"] == expect["reserved"]
    assert stats["ota"] == expect["ota"]
    assert stats["skipped"] == {k.split(":")[1]: v for k, v in expect.items() if k.startswith("skipped:")}
    assert stats["rejected"] == {k.split(":")[1]: v for k, v in expect.items() if k.startswith("rejected:")}
    assert result["rows"] == {t: expect[f"rows:{t}"] for t in ("health", "telemetry", "event")}
    assert result["health"].status_code == 200, result["health"].text
    # the nasty ones were in there
    assert {"invalid", "bad_json", "oversized", "bad_topic", "unsupported_version"} <= set(stats["rejected"])


def _report(result: dict[str, Any], count: int) -> None:
    stats = result["stats"]
    print(f"\nfuzz: {count} messages in {result['elapsed']:.1f} s ({count / result['elapsed']:.0f}/s): "
          f"stored {stats['stored']}, duplicates {stats['duplicates']}, presence {stats['presence']}, "
          f"ota {stats['ota']}, reserved {stats['reserved']}, skipped {stats['skipped']}, "
          f"rejected {stats['rejected']}, "
          f"gaps opened {stats['gaps_opened']}, late {stats['late']}, rows {result['rows']}")


@pytest.mark.timeout(1800)  # a deadline for a loaded machine, not a speed requirement
async def test_a_hundred_thousand_generated_messages_through_mosquitto_are_all_accounted_for(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    result = await _run_traffic(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto, 100_000, seed=108)
    _report(result, 100_000)
    _check(result, 100_000)


@pytest.mark.postgres
@pytest.mark.timeout(900)
async def test_ten_thousand_generated_messages_into_postgresql_are_all_accounted_for(mosquitto: Mosquitto) -> None:
    async with fresh_database() as url:
        result = await _run_traffic(url, mosquitto, 10_000, seed=8)
    _report(result, 10_000)
    _check(result, 10_000)
