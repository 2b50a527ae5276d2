"""The fleet's Prometheus metrics (docs/ops.md, "Metrics"): one registry, figures gathered per scrape.

Two kinds of figures, one registry:
- what the process holds in memory (the ingest's counters, its queue, its batch-latency
  histogram): sync collectors in `FleetMetrics.registry`, read when a scrape renders;
- what the database knows (devices by state, open alerts, rollouts, broadcasts): async `sources`, each a
  coroutine function returning metric families, awaited by the scrape before it renders (the
  client library's collectors are sync, so they cannot query an async database themselves).

Adding figures is one line where the fleet starts (fleet/app.py), e.g.
    metrics.registry.register(MyCollector(...))          # in-memory figures, read at each scrape
    metrics.sources.append(("broadcasts", my_families))  # async: a database query per scrape
A source's families are built fresh at each call (GaugeMetricFamily, CounterMetricFamily, ...).

Bounds: each database source is a few grouped queries (one row per group, not per device);
concurrent scrapes share the one gathering in flight; a failing source costs only its own
figures (`fleet_metrics_source_up{source}` 0, logged once per kind of failure in a row).
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from tortoise.functions import Count

from fleet.broadcast.models import Broadcast, BroadcastReceipt, BroadcastStatus, ReceiptState
from fleet.ingest.link import MqttLink
from fleet.ingest.silence import LivenessView
from fleet.ingest.stats import IngestStats
from fleet.liveness import State
from fleet.models import Device
from fleet.ops.models import Alert, AlertState, Severity
from fleet.ota.rollout_models import Rollout, RolloutDevice
from fleet.ota.states import DeviceState, RolloutStatus
from fleet.settings import Settings

if TYPE_CHECKING:
    from fleet.ota.rollouts import RolloutEngine

log = logging.getLogger(__name__)

Source = Callable[[], Awaitable[Iterable[Metric]]]

# a ward label per distinct ward would let a typo'd registry grow the series without bound: beyond
# this many wards (the most populated kept), the rest are counted under ward="_other"
WARDS_MAX = 100
OTHER_WARD = "_other"


class FleetMetrics:
    """The fleet's one registry and its scrape (`await scrape()` gives the exposition's bytes)."""

    def __init__(self, link: MqttLink, settings: Settings, stats: IngestStats) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sources: list[tuple[str, Source]] = []  # (name, coroutine function), gathered in this order
        self.registry.register(stats.batch_seconds)
        self.registry.register(IngestCollector(stats, link))
        self.sources.append(("devices", DeviceFigures(link, settings).families))
        self.sources.append(("alerts", alert_families))
        self.sources.append(("broadcasts", broadcast_families))
        self._gathering: asyncio.Future[bytes] | None = None
        self._failing: dict[str, str] = {}  # source -> the kind of its last failure (logged once)

    async def scrape(self) -> bytes:
        """The text exposition; a scrape that arrives while another gathers waits for that one's."""
        if self._gathering is None or self._gathering.done():
            self._gathering = asyncio.ensure_future(self._render())
        # shielded: a scraper that hangs up does not cancel the gathering the others wait for
        return await asyncio.shield(self._gathering)

    async def _render(self) -> bytes:
        gathered: list[Metric] = []
        up = GaugeMetricFamily("fleet_metrics_source_up", "1 when the source's figures were gathered "
                               "in this scrape, 0 when it failed (its figures are missing)", labels=["source"])
        seconds = GaugeMetricFamily("fleet_metrics_source_seconds", "Time the source took in this scrape",
                                    labels=["source"])
        for name, source in self.sources:
            started = time.perf_counter()
            try:
                gathered.extend(await source())
            except Exception as err:
                up.add_metric([name], 0)
                kind = type(err).__name__
                if self._failing.get(name) != kind:
                    log.error("metrics: source %s failed (%s: %.200s); its figures are left out", name, kind, err)
                self._failing[name] = kind
            else:
                up.add_metric([name], 1)
                if self._failing.pop(name, None) is not None:
                    log.info("metrics: source %s works again", name)
            seconds.add_metric([name], time.perf_counter() - started)
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_Together(self.registry, [*gathered, up, seconds]))
        return generate_latest(scrape)


class _Together(Collector):
    """One scrape's view: the fleet registry's collectors, then the families the sources gathered."""

    def __init__(self, registry: CollectorRegistry, gathered: Sequence[Metric]) -> None:
        self.registry = registry
        self.gathered = gathered

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from self.gathered


class IngestCollector(Collector):
    """The ingest's counters (fleet/ingest/stats.py) and queue, read at each scrape."""

    def __init__(self, stats: IngestStats, link: MqttLink) -> None:
        self.stats = stats
        self.link = link

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        counters = (
            ("received", "Messages taken from the broker", stats.received),
            ("stored", "Messages stored (health, telemetry, events, results, reported states)", stats.stored),
            ("duplicates", "Messages dropped as duplicates of stored ones (same stream and seq)", stats.duplicates),
            ("late", "Stored messages that filled a sequence gap", stats.late),
            ("gaps_opened", "Sequence gaps detected", stats.gaps_opened),
            ("presence", "Births and deaths taken", stats.presence),
            ("ota", "OTA progress reports taken", stats.ota),
            ("reserved", "Child-device messages checked and numbered, not stored", stats.reserved),
            ("batches", "Batches processed", stats.batches),
            ("batch_errors", "Batches whose processing failed unexpectedly", stats.batch_errors),
            ("store_retries", "Retries of a batch while the database did not answer", stats.store_retries),
        )
        for name, text, value in counters:
            yield CounterMetricFamily(f"fleet_ingest_{name}", text, value=value)
        yield _by_label(CounterMetricFamily("fleet_ingest_rejected", "Messages refused, by reason "
                                            "(docs/protocol.md)", labels=["reason"]), stats.rejected)
        yield _by_label(CounterMetricFamily("fleet_ingest_skipped", "Messages that are not device messages, "
                                            "by why (own_publish, retained_clear)", labels=["reason"]), stats.skipped)
        yield GaugeMetricFamily("fleet_ingest_queue_depth", "Messages received but not yet taken by the ingest",
                                value=self.link.depth())
        yield GaugeMetricFamily("fleet_ingest_queue_max", "The queue's bound (FLEET_INGEST_QUEUE_MAX)",
                                value=self.link.queue_max)
        last = stats.last_message_at
        if last is not None:
            yield GaugeMetricFamily("fleet_ingest_last_message_timestamp_seconds",
                                    "When the ingest last took a batch (Unix time)", value=last.timestamp())
        yield GaugeMetricFamily("fleet_mqtt_listening", "1 while the fleet hears the broker (connected, "
                                "subscribed, its probe coming back); 0: device states read unknown",
                                value=1 if self.link.state().listening_for_s is not None else 0)


def _by_label(family: Any, counts: Counter[str]) -> Any:
    for label, value in sorted(counts.items()):
        family.add_metric([label], value)
    return family


class DeviceFigures:
    """Devices by kind, ward, role and state: the state as `GET /api/devices?state=` finds it (the
    same SQL, fleet/ingest/silence.py `state_filter`), one grouped query per state."""

    def __init__(self, link: MqttLink, settings: Settings) -> None:
        self.link = link
        self.settings = settings

    async def families(self) -> list[Metric]:
        return await self.families_at(LivenessView.of(self.link, self.settings))

    @staticmethod
    async def families_at(view: LivenessView) -> list[Metric]:
        """The families with every state judged by one `view` (one `now`, one link state)."""
        # (kind, ward, state) -> devices; (role, ward, state) -> devices carrying the role
        by_kind: Counter[tuple[str, str, str]] = Counter()
        by_role: Counter[tuple[str, str, str]] = Counter()
        for state in State:
            # grouped by the whole roles list: few distinct lists (a kind of device has its set)
            rows = await (view.filter(Device.all(), state).annotate(n=Count("id"))
                          .group_by("kind", "ward", "roles").values_list("kind", "ward", "roles", "n"))
            for kind, ward, roles, n in rows:
                by_kind[(kind or "", ward or "", state.value)] += int(n)
                for role in set(roles if isinstance(roles, list) else []):
                    by_role[(str(role), ward or "", state.value)] += int(n)
        kept = _kept_wards(by_kind)
        devices = GaugeMetricFamily("fleet_devices", "Devices by kind, ward and state (the fleet's verdict: "
                                    "online, stale, offline, unknown, never_seen, decommissioned)",
                                    labels=["kind", "ward", "state"])
        for (kind, ward, state_name), n in _zero_filled(by_kind, kept).items():
            devices.add_metric([kind, ward, state_name], n)
        roles = GaugeMetricFamily("fleet_role_devices", "Devices carrying a role (as their birth declared it), "
                                  "by ward and state; a device with two roles counts under both",
                                  labels=["role", "ward", "state"])
        for (role, ward, state_name), n in _zero_filled(by_role, kept).items():
            roles.add_metric([role, ward, state_name], n)
        return [devices, roles]


def _kept_wards(by_kind: Counter[tuple[str, str, str]]) -> set[str]:
    """The WARDS_MAX wards with the most devices (ties by name)."""
    per_ward: Counter[str] = Counter()
    for (_, ward, _), n in by_kind.items():
        per_ward[ward] += n
    ranked = sorted(per_ward.items(), key=lambda item: (-item[1], item[0]))
    return {ward for ward, _ in ranked[:WARDS_MAX]}


def _zero_filled(counts: Counter[tuple[str, str, str]], wards: set[str]) -> dict[tuple[str, str, str], int]:
    """Every state for each (first label, ward) seen, 0 where none: a series falls to 0 instead of
    vanishing when its last device leaves a state. Wards beyond `wards` fold into OTHER_WARD."""
    folded: Counter[tuple[str, str, str]] = Counter()
    for (first, ward, state_name), n in counts.items():
        folded[(first, ward if ward in wards else OTHER_WARD, state_name)] += n
    pairs = sorted({(first, ward) for first, ward, _ in folded})
    return {(first, ward, state.value): folded[(first, ward, state.value)] for first, ward in pairs for state in State}


async def alert_families() -> list[Metric]:
    """Alerts not resolved (open or acknowledged), by severity, rule kind and state: one grouped
    query over the `(state, severity)` index. Every severity appears (0 when none is open)."""
    rows = await (Alert.filter(state__not=AlertState.RESOLVED).annotate(n=Count("id"))
                  .group_by("severity", "kind", "state").values_list("severity", "kind", "state", "n"))
    family = GaugeMetricFamily("fleet_alerts_open", "Alerts not resolved, by severity, rule kind and state "
                               "(open, acknowledged)", labels=["severity", "kind", "state"])
    for severity, kind, state, n in sorted(rows, key=lambda row: (str(row[0]), str(row[1]), str(row[2]))):
        family.add_metric([str(severity), str(kind), str(state)], int(n))
    totals = GaugeMetricFamily("fleet_alerts_open_by_severity", "Alerts not resolved, by severity (every "
                               "severity, 0 when none)", labels=["severity"])
    per_severity: Counter[str] = Counter()
    for severity, _, _, n in rows:
        per_severity[str(severity)] += int(n)
    for severity in Severity:
        totals.add_metric([severity.value], per_severity[severity.value])
    return [family, totals]


def rollout_source(engine: "RolloutEngine") -> Source:
    """Rollouts by status, the devices of the running and paused ones by state (two grouped
    queries), and the offers the engine has sent since the start."""

    async def families() -> list[Metric]:
        rollouts = GaugeMetricFamily("fleet_ota_rollouts", "Rollouts by status", labels=["status"])
        counts = dict(await Rollout.annotate(n=Count("id")).group_by("status").values_list("status", "n"))
        for status in RolloutStatus:
            rollouts.add_metric([status.value], int(counts.get(status, 0)))
        devices = GaugeMetricFamily("fleet_ota_rollout_devices", "Devices of running and paused rollouts, "
                                    "by their state in the rollout", labels=["state"])
        active = [RolloutStatus.RUNNING, RolloutStatus.PAUSED]
        counts = dict(await RolloutDevice.filter(rollout__status__in=active).annotate(n=Count("id"))
                      .group_by("state").values_list("state", "n"))
        for state in DeviceState:
            devices.add_metric([state.value], int(counts.get(state, 0)))
        offers = CounterMetricFamily("fleet_ota_offers_sent", "Update offers the rollout engine published",
                                     value=engine.offers_sent)
        return [rollouts, devices, offers]

    return families


RECEIPTS_WINDOW = timedelta(hours=24)


async def broadcast_families() -> list[Metric]:
    """Broadcasts by status, and the receipts of the occurrences scheduled in the last 24 hours by
    state (which speakers played, failed or missed): two grouped queries, the second over the
    `occurrence_at` index, so its cost follows the day's occurrences, not the table's age."""
    broadcasts = GaugeMetricFamily("fleet_broadcasts", "Broadcasts by status", labels=["status"])
    counts = dict(await Broadcast.annotate(n=Count("id")).group_by("status").values_list("status", "n"))
    for status in BroadcastStatus:
        broadcasts.add_metric([status.value], int(counts.get(status, 0)))
    receipts = GaugeMetricFamily("fleet_broadcast_receipts_24h", "Speaker receipts of the occurrences scheduled "
                                 "in the last 24 hours, by state", labels=["state"])
    now = datetime.now(UTC)
    counts = dict(await BroadcastReceipt.filter(occurrence_at__gte=now - RECEIPTS_WINDOW, occurrence_at__lte=now)
                  .annotate(n=Count("id")).group_by("state").values_list("state", "n"))
    for state in ReceiptState:
        receipts.add_metric([state.value], int(counts.get(state, 0)))
    return [broadcasts, receipts]


def build(link: MqttLink, settings: Settings, stats: IngestStats) -> FleetMetrics:
    """The fleet's metrics; fleet/app.py adds the workers' figures to it once they exist."""
    return FleetMetrics(link, settings, stats)
