"""Who may read GET /metrics (docs/ops.md, "Metrics"), and the Grafana dashboard built on it.

The database does not matter here: SQLite only. A client from another machine is the same app
called through httpx's ASGI transport with a non-loopback client address.
"""

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr, ValidationError

from fleet.api.routes.metrics import is_loopback
from fleet.settings import Settings
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "fleet-dashboard.json"
TOKEN = "metrics-" + "x" * 24
ELSEWHERE = ("192.0.2.7", 40000)  # TEST-NET-1: not this machine


def from_elsewhere(http: httpx.AsyncClient, **headers: str) -> httpx.AsyncClient:
    """A client of the same running app whose address is not the fleet's machine."""
    transport = httpx.ASGITransport(app=http.app, client=ELSEWHERE)  # type: ignore[attr-defined]
    return httpx.AsyncClient(transport=transport, base_url="http://fleet.example", headers=headers)


@pytest.fixture
async def sqlite_fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[httpx.AsyncClient]:
    async with running_fleet(fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url)) as http:
        yield http


async def test_without_a_token_only_this_machine_is_answered(sqlite_fleet: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(sqlite_fleet.base_url)) as anonymous:  # no login: none needed
        local = await anonymous.get("/metrics")
    assert local.status_code == 200
    assert local.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    async with from_elsewhere(sqlite_fleet) as remote:
        refused = await remote.get("/metrics")
        # a person's login does not open it either: Prometheus is not a person
        logged_in = await remote.get("/metrics", headers={"Authorization": sqlite_fleet.headers["Authorization"]})
    assert refused.status_code == 403 and "FLEET_METRICS_TOKEN" in refused.json()["detail"]
    assert logged_in.status_code == 403


async def test_with_a_token_every_client_must_send_it(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url, metrics_token=TOKEN)
    async with running_fleet(settings) as http:
        async with httpx.AsyncClient(base_url=str(http.base_url)) as local:
            answers = {
                "none": await local.get("/metrics"),
                "wrong": await local.get("/metrics", headers={"Authorization": "Bearer " + TOKEN[:-1] + "y"}),
                "prefix": await local.get("/metrics", headers={"Authorization": "Bearer " + TOKEN[:-1]}),
                "basic": await local.get("/metrics", headers={"Authorization": "Basic " + TOKEN}),
                "a person's": await local.get("/metrics", headers={"Authorization": http.headers["Authorization"]}),
            }
            right_here = await local.get("/metrics", headers={"Authorization": "Bearer " + TOKEN})
        async with from_elsewhere(http, Authorization="Bearer " + TOKEN) as remote:
            right_elsewhere = await remote.get("/metrics")
    for what, answer in answers.items():
        assert answer.status_code == 401, what
        assert answer.headers["www-authenticate"].startswith("Bearer"), what
        assert TOKEN not in answer.text, what
    assert right_here.status_code == 200 and "fleet_devices" in right_here.text
    assert right_elsewhere.status_code == 200 and "fleet_ingest_received_total" in right_elsewhere.text


def test_a_short_token_stops_the_start() -> None:
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(metrics_token=SecretStr("short"))


def test_loopback_addresses() -> None:
    assert all(is_loopback(a) for a in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"))
    assert not any(is_loopback(a) for a in ("192.0.2.7", "::ffff:192.0.2.7", "10.0.0.1", "", "testclient", "::"))


def served_names(text: str) -> set[str]:
    """Every series name the exposition can hold for its families, with the suffixes their type
    implies (a counter's `_total`, a histogram's `_bucket`, `_sum`, `_count`), samples or not."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """The panels' queries and the template variables' (`label_values(fleet_devices, ward)`)."""
    panels = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    variables = [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return panels + variables


async def test_the_grafana_dashboard_uses_only_metrics_the_fleet_serves(sqlite_fleet: httpx.AsyncClient) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in dashboard["templating"]["list"] if v["type"] == "datasource"] == ["DS_PROMETHEUS"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    expressions = dashboard_expressions(dashboard)
    for expr in expressions:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    used = {name for expr in expressions for name in re.findall(r"\bfleet_[a-z0-9_]+", expr)}
    served = served_names((await sqlite_fleet.get("/metrics")).text)
    assert used and used <= served, sorted(used - served)
    # the figures are all on it
    for name in ("fleet_devices", "fleet_role_devices", "fleet_ingest_received_total", "fleet_ingest_rejected_total",
                 "fleet_ingest_queue_depth", "fleet_ingest_batch_seconds_bucket", "fleet_alerts_open_by_severity"):
        assert name in used, name
    assert any("histogram_quantile(0.99" in e for e in expressions)
    assert any("histogram_quantile(0.5" in e for e in expressions)


async def test_a_failing_source_costs_only_its_own_figures(sqlite_fleet: httpx.AsyncClient) -> None:
    async def broken() -> list[Any]:
        raise RuntimeError("the database went away")

    runtime = sqlite_fleet.app.state.runtime  # type: ignore[attr-defined]
    runtime.metrics.sources.append(("broken", broken))
    first, second = await asyncio.gather(sqlite_fleet.get("/metrics"), sqlite_fleet.get("/metrics"))
    assert first.status_code == second.status_code == 200
    served = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(first.text) for s in family.samples}
    assert served[("fleet_metrics_source_up", (("source", "broken"),))] == 0
    assert served[("fleet_metrics_source_up", (("source", "devices"),))] == 1
    assert ("fleet_ingest_received_total", ()) in served
