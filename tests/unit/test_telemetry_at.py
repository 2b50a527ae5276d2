"""The time a telemetry row is filed at (fleet/ingest/store.py `telemetry_at`; docs/fleet.md,
"Telemetry time"), for every stamp the contract lets through."""

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from contract import parse_upstream
from contract.examples import valid_examples
from contract.messages import MAX_INT
from fleet.ingest.store import telemetry_at

EXAMPLE = valid_examples()["telemetry"]
ARRIVAL = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
YEAR_10000_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000) + 1
unix_ms = st.integers(min_value=0, max_value=MAX_INT - 1)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@given(st.none() | unix_ms, st.none() | unix_ms)
def test_the_row_is_filed_at_at_ms_else_ts_else_the_arrival(ts: int | None, at_ms: int | None) -> None:
    body = {**EXAMPLE["payload"], "ts": ts}
    if at_ms is not None:
        body["at_ms"] = at_ms
    message = parse_upstream(EXAMPLE["topic"], json.dumps(body).encode())
    at = telemetry_at(message, ARRIVAL)
    if ts is None:
        assert at == ARRIVAL  # the device's clock is unknown: so is what its at_ms was read on
    else:
        chosen = at_ms if at_ms is not None else ts
        assert at == (_utc(chosen) if chosen < YEAR_10000_MS else ARRIVAL)


def test_a_sensor_point_sent_a_minute_late_is_filed_at_its_sample_time() -> None:
    example = valid_examples()["telemetry.sensor"]
    message = parse_upstream(example["topic"], json.dumps(example["payload"]).encode())
    assert telemetry_at(message, ARRIVAL) == _utc(example["payload"]["at_ms"])
    assert _utc(example["payload"]["ts"]) - telemetry_at(message, ARRIVAL) == _utc(61_000) - _utc(0)
