"""GET /metrics on a real fleet (real Mosquitto, SQLite and PostgreSQL): devices by kind, ward, role
and state as the device list judges them, the ingest's figures, open alerts (docs/ops.md, "Metrics")."""

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet.liveness import State
from fleet.ops import metrics
from fleet.ops.models import Alert, AlertRule, AlertState, Severity
from tests.support.device import ScriptedDevice
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: httpx.AsyncClient) -> Samples:
    """Every sample served, by (name, sorted labels); parsed with the Prometheus text parser."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def series(samples: Samples, name: str, *label_names: str) -> dict[tuple[str, ...], float]:
    """One metric's samples by the values of `label_names`, in that order."""
    return {tuple(dict(labels)[label] for label in label_names): value
            for (n, labels), value in samples.items() if n == name}


@pytest.fixture
async def quick_fleet(database_url: str, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    """A fleet where one quiet health period makes a device stale and a hundred offline, so a device
    with a 1 s period is stale from 1 s to 100 s after its last message: no race with the clock.
    The alert engine turns at start and then every 300 s: it does not judge the tests' alert rows."""
    settings = fleet_settings(database_url, mosquitto.url, stale_after_periods=1, silent_after_periods=100,
                              ops_tick_s=300)
    async with running_fleet(settings) as http:
        yield http


async def test_devices_by_kind_ward_role_and_state_match_the_device_list(
        quick_fleet: httpx.AsyncClient, mosquitto: Mosquitto) -> None:
    http = quick_fleet
    registered = [("cam-1", "pi", "Tan Phu"), ("cam-2", "pi", "Tan Phu"), ("spk-1", "esp32", "Tan Binh"),
                  ("lamp-1", "esp32", "Tan Binh"), ("new-1", "pi", "Tien Thanh"), ("old-1", "esp32", "Tien Thanh")]
    for device_id, kind, ward in registered:
        response = await http.post("/api/devices", json={"id": device_id, "kind": kind, "ward": ward})
        assert response.status_code == 201, response.text
    assert (await http.post("/api/devices/old-1/decommission")).status_code == 200
    devices = {
        "cam-1": ScriptedDevice(mosquitto.port, "cam-1", ses=1),
        "cam-2": ScriptedDevice(mosquitto.port, "cam-2", ses=1),
        "spk-1": ScriptedDevice(mosquitto.port, "spk-1", ses=1),
        "lamp-1": ScriptedDevice(mosquitto.port, "lamp-1", ses=1),
        "wifi-1": ScriptedDevice(mosquitto.port, "wifi-1", ses=1),  # not registered: discovered, no ward
    }
    try:
        devices["cam-1"].birth(kind="pi", roles=["camera"], period_s=3600)
        devices["cam-1"].health()
        devices["cam-2"].birth(kind="pi", roles=["camera"], period_s=1)  # then silent: stale after 1 s
        devices["spk-1"].birth(kind="esp32", roles=["speaker"], period_s=3600)
        devices["spk-1"].death(reason="shutdown")
        devices["lamp-1"].birth(kind="esp32", roles=["light", "env"], period_s=3600)
        devices["wifi-1"].birth(kind="pi", roles=["wifi"], period_s=3600)
        devices["wifi-1"].raw("health", b"{not json")  # refused: counted by reason

        want_devices = {("pi", "Tan Phu", "online"): 1, ("pi", "Tan Phu", "stale"): 1,
                        ("esp32", "Tan Binh", "offline"): 1, ("esp32", "Tan Binh", "online"): 1,
                        ("pi", "Tien Thanh", "never_seen"): 1, ("esp32", "Tien Thanh", "decommissioned"): 1,
                        ("pi", "", "online"): 1}
        want_roles = {("camera", "Tan Phu", "online"): 1, ("camera", "Tan Phu", "stale"): 1,
                      ("speaker", "Tan Binh", "offline"): 1, ("light", "Tan Binh", "online"): 1,
                      ("env", "Tan Binh", "online"): 1, ("wifi", "", "online"): 1}

        async def settled() -> Samples:  # empty until settled
            samples = await scrape(http)
            shown = {key: n for key, n in series(samples, "fleet_devices", "kind", "ward", "state").items() if n}
            roles = {key: n for key, n in series(samples, "fleet_role_devices", "role", "ward", "state").items() if n}
            stats = (await http.get("/api/ingest/stats")).json()
            counted = samples.get(("fleet_ingest_batch_seconds_count", ()), 0) == stats["batches"]
            done = stats["accounted"] == stats["received"] and counted
            return samples if shown == want_devices and roles == want_roles and done else {}

        samples = await async_wait_for(settled, what="the devices' states in /metrics", timeout=30)
    finally:
        for device in devices.values():
            device.close()

    # zero-filled: each (kind, ward) seen has every state, so a series falls to 0 instead of vanishing
    shown = series(samples, "fleet_devices", "kind", "ward", "state")
    assert {state for kind, ward, state in shown if (kind, ward) == ("pi", "Tan Phu")} == {s.value for s in State}
    assert shown[("pi", "Tan Phu", "offline")] == 0
    # the same verdict as GET /api/devices?state= (one SQL: fleet/ingest/silence.py state_filter)
    for state in State:
        listed = await http.get("/api/devices", params={"state": state.value, "limit": 1})
        in_metrics = sum(n for (_, _, s), n in shown.items() if s == state.value)
        assert int(listed.headers["X-Total-Count"]) == in_metrics, state

    stats = (await http.get("/api/ingest/stats")).json()
    assert samples[("fleet_ingest_received_total", ())] == stats["received"] >= 9
    assert samples[("fleet_ingest_stored_total", ())] == stats["stored"] >= 1
    assert samples[("fleet_ingest_presence_total", ())] == stats["presence"] >= 6
    rejected = {reason: n for (reason,), n in series(samples, "fleet_ingest_rejected_total", "reason").items()}
    assert rejected == stats["rejected"] and sum(rejected.values()) == 1
    assert samples[("fleet_ingest_queue_depth", ())] == 0
    assert samples[("fleet_ingest_queue_max", ())] == 20_000
    assert samples[("fleet_mqtt_listening", ())] == 1
    # every batch observed once; its buckets are cumulative up to +Inf
    batches = samples[("fleet_ingest_batch_seconds_count", ())]
    assert batches == stats["batches"] >= 1
    assert samples[("fleet_ingest_batch_seconds_bucket", (("le", "+Inf"),))] == batches
    assert samples[("fleet_ingest_batch_seconds_sum", ())] > 0
    assert series(samples, "fleet_metrics_source_up", "source") == {
        ("devices",): 1, ("alerts",): 1, ("broadcasts",): 1, ("rollouts",): 1, ("relay",): 1}
    assert series(samples, "fleet_ota_rollouts", "status")[("running",)] == 0  # zero-filled, every status
    assert series(samples, "fleet_broadcast_receipts_24h", "state")[("missed",)] == 0


async def test_open_alerts_by_severity_kind_and_state(quick_fleet: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    rules = {kind: await AlertRule.create(name=f"metrics-test-{kind}", kind=kind, severity=severity)
             for kind, severity in (("offline", Severity.CRITICAL), ("temp_high", Severity.MAJOR))}

    async def alert(kind: str, device: str, state: AlertState, severity: Severity) -> None:
        fields: dict[str, Any] = {"live_key": f"{rules[kind].id}:{device}"} if state != AlertState.RESOLVED else {}
        await Alert.create(rule=rules[kind], kind=kind, device_id=device, severity=severity, state=state,
                           summary="test", raised_at=now, last_true_at=now, **fields)

    await alert("offline", "a", AlertState.OPEN, Severity.CRITICAL)
    await alert("offline", "b", AlertState.OPEN, Severity.CRITICAL)
    await alert("offline", "c", AlertState.ACKNOWLEDGED, Severity.CRITICAL)
    await alert("offline", "d", AlertState.RESOLVED, Severity.CRITICAL)  # not counted
    await alert("temp_high", "a", AlertState.OPEN, Severity.MAJOR)
    samples = await scrape(quick_fleet)
    assert series(samples, "fleet_alerts_open", "severity", "kind", "state") == {("critical", "offline", "open"): 2,
                                                    ("critical", "offline", "acknowledged"): 1,
                                                    ("major", "temp_high", "open"): 1}
    assert series(samples, "fleet_alerts_open_by_severity", "severity") == {
        ("critical",): 3, ("major",): 1, ("minor",): 0, ("warning",): 0}


def test_wards_beyond_the_bound_are_counted_under_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry with a ward per device must not make a series per device: the most populated
    WARDS_MAX wards keep their label, the rest are summed under `_other`; every state zero-filled."""
    monkeypatch.setattr(metrics, "WARDS_MAX", 2)
    counts = Counter({("pi", "A", "online"): 5, ("pi", "B", "online"): 3, ("pi", "C", "offline"): 1,
                      ("esp32", "D", "stale"): 1})
    filled = metrics._zero_filled(counts, metrics._kept_wards(counts))
    assert {(kind, ward) for kind, ward, _ in filled} == {("pi", "A"), ("pi", "B"), ("pi", "_other"),
                                                          ("esp32", "_other")}
    assert filled[("pi", "_other", "offline")] == 1 and filled[("esp32", "_other", "stale")] == 1
    assert filled[("pi", "A", "stale")] == 0 and len(filled) == 4 * len(State)
