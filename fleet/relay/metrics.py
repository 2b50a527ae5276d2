"""The relay's figures on /metrics (docs/ops.md, "Metrics"; docs/relay.md, "Measured"):
what this process's worker did (attempts by outcome, delivery latency), read at each scrape, and
what the outbox holds (deliveries by endpoint and status, endpoints enabled or not), two grouped
queries per scrape. Registered where the fleet starts (fleet/app.py)."""

from collections import Counter
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from tortoise.functions import Count

from fleet.relay.models import DeliveryStatus, RelayDelivery, RelayEndpoint
from fleet.relay.transport import Outcome

# event received by the fleet -> the receiver's 2xx/PUBACK; fixed buckets: bounded memory
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
OUTCOMES = ("ok", "failed", "gone")


def outcome_label(outcome: Outcome) -> str:
    return "ok" if outcome.ok else "gone" if outcome.gone else "failed"


class RelayStats:
    """The worker's in-memory figures since the process started. Labels are endpoint names: as many
    series as endpoints (the API lists at most 500)."""

    def __init__(self) -> None:
        self.attempts: Counter[tuple[str, str]] = Counter()  # (endpoint, outcome) -> attempts
        # registered in no registry here (every fleet in one process has its own)
        self.latency = Histogram("fleet_relay_delivery_latency_seconds", "Time from the fleet receiving an "
                                 "event to the receiver acknowledging its relayed message (2xx or PUBACK)",
                                 buckets=LATENCY_BUCKETS, registry=None)

    def attempt(self, endpoint: str, outcome: Outcome, received_at: datetime | None, answered_at: datetime) -> None:
        self.attempts[(endpoint, outcome_label(outcome))] += 1
        if outcome.ok and received_at is not None:
            self.latency.observe(max(0.0, (answered_at - received_at).total_seconds()))


class RelayCollector(Collector):
    def __init__(self, stats: RelayStats) -> None:
        self.stats = stats

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily("fleet_relay_attempts", "Delivery attempts this process made, by endpoint "
                                       "and outcome (ok, failed, gone: a 410)", labels=["endpoint", "outcome"])
        delivered = CounterMetricFamily("fleet_relay_delivered", "Deliveries this process delivered, by endpoint",
                                        labels=["endpoint"])
        for endpoint in sorted({name for name, _ in self.stats.attempts}):
            for outcome in OUTCOMES:
                attempts.add_metric([endpoint, outcome], self.stats.attempts[(endpoint, outcome)])
            delivered.add_metric([endpoint], self.stats.attempts[(endpoint, "ok")])
        yield attempts
        yield delivered


async def relay_families() -> list[Metric]:
    """Deliveries held by endpoint and status (one grouped query over the outbox's index; delivered and
    dead rows are pruned with the events' retention), and endpoints by enabled or not."""
    endpoints = await RelayEndpoint.all().values_list("id", "name", "enabled")
    names = {endpoint_id: name for endpoint_id, name, _ in endpoints}
    enabled = {endpoint_id: bool(on) for endpoint_id, _, on in endpoints}
    rows = await (RelayDelivery.annotate(n=Count("id")).group_by("endpoint_id", "status")
                  .values_list("endpoint_id", "status", "n"))
    counts: Counter[tuple[int, str]] = Counter()
    for endpoint_id, status, n in rows:
        counts[(int(endpoint_id), str(status))] += int(n)
    deliveries = GaugeMetricFamily("fleet_relay_deliveries", "Deliveries held in the outbox, by endpoint and "
                                   "status (pending, delivered, dead)", labels=["endpoint", "status"])
    for endpoint_id, name in sorted(names.items(), key=lambda item: item[1]):
        for status in DeliveryStatus:
            deliveries.add_metric([name, status.value], counts[(endpoint_id, status.value)])
    disabled = GaugeMetricFamily("fleet_relay_endpoints", "Relay endpoints, by whether they are enabled",
                                 labels=["state"])
    off = sum(1 for on in enabled.values() if not on)
    disabled.add_metric(["enabled"], len(enabled) - off)
    disabled.add_metric(["disabled"], off)
    return [deliveries, disabled]
