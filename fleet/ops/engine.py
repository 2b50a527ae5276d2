"""The alert engine: every turn of the ops worker, the enabled rules over the devices (docs/ops.md,
"Alert rules").

For each (rule, device) in the rule's scope: a condition that fires with no live alert raises one
(or re-raises the one the engine resolved less than REOPEN_S ago: a flapping-like return counts on
the same alert); one that keeps firing keeps its alert (last_true_at, value); one that cleared
resolves it. `UNKNOWN` (nothing current to judge by) leaves it as it is. Each raise, re-raise and
resolve writes an AlertEvent with notify "pending" for the notifier, "none" while the alert is
silenced. At most one live alert per (rule, device), across fleet instances too: `live_key` is
unique, and every change is a conditional update that a second instance's finds already made.

Bounds: devices in batches of BATCH (the facts of a batch cost a fixed number of statements,
fleet/ops/facts.py); at most SWEEP_MAX alerts unsilenced or retired per turn (the rest next turn).
"""

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q, Subquery

from fleet.ingest.silence import LivenessView, hearing_of, timing_of
from fleet.liveness import Hearing, Timing
from fleet.models import RETIRED_STATUSES, Device, DeviceStatus
from fleet.ops import facts as batch_facts
from fleet.ops.alerts import LIVE, ensure_builtin_rules, live_key_of, record
from fleet.ops.models import Alert, AlertRule, AlertState
from fleet.ops.rules import UNKNOWN, Facts, Firing, Kind, Params, RuleError, applies, kind_of

if TYPE_CHECKING:
    from fleet.ops.service import OpsWorker

log = logging.getLogger(__name__)

BATCH = 500  # devices judged per batch
REOPEN_S = 600  # a condition back this soon after the engine resolved its alert re-raises that alert
KEEP_WRITE_S = 60  # a firing alert's last_true_at is written at most this often (and when its value changes)
# what the rules read of a device (the verdict's inputs, scope, health, birth); the rest is not loaded
DEVICE_FIELDS = ("id", "kind", "ward", "roles", "status", "online", "session", "epoch", "last_seen_at",
                 "last_death_at", "last_death_reason", "silenced_at", "health_period_s", "last_health",
                 "last_health_at", "birth")
BAD_KEEP = 1000  # failed (rule, device) evaluations remembered so each is logged once; beyond, not logged
SWEEP_MAX = 1000  # alerts unsilenced, and alerts retired (rule disabled, device decommissioned), per turn


def _summary(text: str) -> str:
    return text if len(text) <= 300 else text[:299] + "…"


class AlertEngine:
    def __init__(self, worker: "OpsWorker | None" = None, *, hearing: Callable[[], Hearing] | None = None,
                 timing: Timing | None = None) -> None:
        """From the ops worker (its link's hearing, its settings' timing), or both given (tests)."""
        if worker is not None:
            link, settings = worker.link, worker.settings
            hearing = hearing or (lambda: hearing_of(link.state().listening_for_s))
            timing = timing or timing_of(settings)
        if hearing is None or timing is None:
            raise ValueError("AlertEngine needs the ops worker, or hearing and timing")
        self.hearing: Callable[[], Hearing] = hearing
        self.timing: Timing = timing
        self._seeded = False
        self._bad_rules: set[int] = set()  # rules whose stored params failed, logged once
        self._bad_devices: set[tuple[int, str]] = set()  # (rule, device) whose evaluation failed, logged once

    async def tick(self, now: datetime) -> None:
        if not self._seeded:
            await ensure_builtin_rules()
            self._seeded = True
        await self.unsilence(now)
        await self.retire(now)
        rules = self.usable(await AlertRule.filter(enabled=True).order_by("id"))
        if not rules:
            return
        view = LivenessView(now, self.hearing(), self.timing)
        seen = Q(session__isnull=False) | Q(last_seen_at__isnull=False)
        after = ""
        while True:
            devices = await (Device.filter(seen, id__gt=after).exclude(status__in=RETIRED_STATUSES)
                             .order_by("id").limit(BATCH).only(*DEVICE_FIELDS))
            if not devices:
                break
            await self.judge_batch(devices, rules, view, now)
            after = devices[-1].id
            if len(devices) < BATCH:
                break

    def usable(self, rules: Sequence[AlertRule]) -> list[tuple[AlertRule, Kind, Params]]:
        """Each rule with its kind and parsed params, once per turn; a rule stored with an unknown
        kind or params that do not fit it (written around the API) is skipped, logged once."""
        found: list[tuple[AlertRule, Kind, Params]] = []
        for rule in rules:
            try:
                kind = kind_of(rule.kind)
                found.append((rule, kind, kind.params.model_validate(rule.params)))
            except (RuleError, ValidationError) as err:
                if rule.id not in self._bad_rules:
                    self._bad_rules.add(rule.id)
                    log.error("alert rule %d (%.40s): not usable, skipped: %.200s", rule.id, rule.kind, err)
        return found

    async def judge_batch(self, devices: Sequence[Device], rules: Sequence[tuple[AlertRule, Kind, Params]],
                          view: LivenessView, now: datetime) -> None:
        known = {d.id: batch_facts.base_facts(d, view) for d in devices}
        scoped: list[tuple[AlertRule, Kind, Params, list[Facts]]] = []
        needs: set[tuple[str, int | None]] = set()
        for rule, kind, params in rules:
            covered = [f for f in known.values() if applies(rule.device_kind, rule.role, rule.ward, f.kind, f.roles,
                                                            f.ward)]
            scoped.append((rule, kind, params, covered))
            if covered and kind.need:
                window = getattr(params, "window_s", None)
                needs.add((kind.name, window if isinstance(window, int) else None))
        await batch_facts.load(known, devices, needs, now)
        span = Q(device_id__gte=devices[0].id, device_id__lte=devices[-1].id)  # the batch, in id order
        live = {(a.rule_id, a.device_id): a  # type: ignore[attr-defined]
                for a in await Alert.filter(span, live_key__isnull=False) if a.device_id in known}
        recent: dict[tuple[int, str], Alert] = {}
        for old in await Alert.filter(span, live_key__isnull=True, resolved_by__isnull=True,
                                      resolved_at__gte=now - timedelta(seconds=REOPEN_S)).order_by("resolved_at"):
            recent[(old.rule_id, old.device_id)] = old  # type: ignore[attr-defined]  # the latest wins
        for rule, kind, params, covered in scoped:
            in_scope = {f.device_id for f in covered}
            for (rule_id, device_id), stray in live.items():
                if rule_id == rule.id and device_id not in in_scope:
                    await self.resolve(stray, now, "the rule no longer covers the device")
            for facts in covered:
                try:
                    outcome = kind.evaluate(facts, params, now)
                except Exception as err:  # one device's odd figures never stop the others' judgement
                    if (rule.id, facts.device_id) not in self._bad_devices and len(self._bad_devices) < BAD_KEEP:
                        self._bad_devices.add((rule.id, facts.device_id))
                        log.error("alert rule %d (%s) failed on device %s: %s: %.200s", rule.id, rule.kind,
                                  facts.device_id, type(err).__name__, err)
                    continue
                if outcome is UNKNOWN:
                    continue
                alert = live.get((rule.id, facts.device_id))
                if isinstance(outcome, Firing):
                    if alert is not None:
                        await self.keep(alert, outcome, now)
                    else:
                        await self.raise_(rule, facts, outcome, now, recent.get((rule.id, facts.device_id)))
                elif alert is not None:
                    await self.resolve(alert, now, "the condition cleared")

    async def raise_(self, rule: AlertRule, facts: Facts, firing: Firing, now: datetime,
                     resolved: Alert | None) -> None:
        key = live_key_of(rule.id, facts.device_id)
        if resolved is not None:  # back soon after it cleared: the same alert again, one count more
            try:
                changed = await Alert.filter(id=resolved.id, live_key__isnull=True).update(
                    live_key=key, state=AlertState.OPEN, resolved_at=None, resolved_by=None, acknowledged_at=None,
                    acknowledged_by=None, count=F("count") + 1, last_true_at=now, value=firing.value,
                    summary=_summary(firing.summary))
            except IntegrityError:
                return  # another instance raised it meanwhile
            if changed:
                await resolved.refresh_from_db()
                await record(resolved, "reraised", "", now, {"count": resolved.count, "summary": resolved.summary},
                             engine=True)
                return
        try:
            alert = await Alert.create(rule_id=rule.id, kind=rule.kind, device_id=facts.device_id,
                                       device_kind=facts.kind, ward=facts.ward, severity=rule.severity,
                                       live_key=key, summary=_summary(firing.summary), value=firing.value,
                                       raised_at=now, last_true_at=now)
        except IntegrityError:
            return  # another instance raised it first
        await record(alert, "raised", "", now, {"summary": alert.summary, "value": firing.value}, engine=True)

    async def keep(self, alert: Alert, firing: Firing, now: datetime) -> None:
        """The figures as they are now; last_true_at written at most every KEEP_WRITE_S while they
        stay the same (values hold starts, not durations, so a steady condition writes rarely)."""
        if alert.value == firing.value and now - alert.last_true_at < timedelta(seconds=KEEP_WRITE_S):
            return
        await Alert.filter(id=alert.id, live_key=alert.live_key).update(
            last_true_at=now, value=firing.value, summary=_summary(firing.summary))

    async def resolve(self, alert: Alert, now: datetime, why: str) -> None:
        changed = await Alert.filter(id=alert.id, live_key=alert.live_key).update(
            state=AlertState.RESOLVED, live_key=None, resolved_at=now, resolved_by=None)
        if changed:
            await record(alert, "resolved", "", now, {"why": why}, engine=True)

    async def unsilence(self, now: datetime) -> None:
        """Silences that ran out end: an `unsilenced` event, notify none."""
        for alert in await Alert.filter(silenced_until__lte=now).limit(SWEEP_MAX):
            changed = await Alert.filter(id=alert.id, silenced_until=alert.silenced_until).update(
                silenced_until=None, silenced_by=None)
            if changed and alert.state != AlertState.RESOLVED:
                await record(alert, "unsilenced", "", now, {"why": "the silence ran out"})

    async def retire(self, now: datetime) -> None:
        """Live alerts of disabled rules and of decommissioned devices resolve."""
        retired = Device.filter(status=DeviceStatus.DECOMMISSIONED).values("id")
        reasons: list[tuple[Any, str]] = [
            (Alert.filter(state__in=LIVE, rule__enabled=False), "the rule was disabled"),
            (Alert.filter(state__in=LIVE, device_id__in=Subquery(retired)), "the device was decommissioned"),
            (Alert.filter(state__in=LIVE, device_id__in=Subquery(
                Device.filter(status=DeviceStatus.REPLACED).values("id"))), "replaced"),
        ]
        for query, why in reasons:
            for alert in await query.limit(SWEEP_MAX):
                await self.resolve(alert, now, why)
