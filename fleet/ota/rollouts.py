"""The rollout engine: offers, timeouts, the phase gate, auto-pause (docs/fleet.md "Rollouts").

One task in the fleet (`fleet-rollouts`), a tick every `tick_s` (1 s) or sooner when nudged (an
API command). Each tick tends every rollout that is running or paused, or still has offers
standing on the broker or rollback offers to send:

1. **Timeouts.** A device offered or in flight with no report for `offer_timeout_s` is `failed`
   (`timeout`); one `rebooting` for more than `online_within_s` is `failed` (`offline`). A report
   that comes later still counts (fleet.ota.states.accepts).
2. **Clearing.** A device that finished (confirmed, failed, rolled back) gets its retained offer
   cleared (an empty retained publish); an aborted rollout's install offers are all cleared.
3. **Rollback offers** a command asked for are sent, whatever the rollout's status and windows.
4. While **running**: the failure rate of the current phase (`failed` + `rolled_back` over the
   devices offered an install, since the last resume) above `max_failure_pct` pauses the
   rollout. Otherwise pending devices of the phases so far whose windows are open are offered, in
   rank order, within the rate limit. When every device of the phases so far has finished, the
   soak starts; after `soak_s` the gate (fleet.ota.gate) judges the phase's updated devices:
   a breach pauses, else the next phase starts (or the rollout is done).

Rate limit: at most `offers_per_min` offers (install and rollback) in any 60 s (counted in the
database from `offered_at`), spread over the ticks (the minute's share of the time since the
last tick), and at most OFFERS_PER_TICK per tick.
"""

import asyncio
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from contract import device_topic
from fleet.auth import audit
from fleet.ingest.link import LinkError, MqttLink
from fleet.ingest.silence import LivenessView
from fleet.lease import Leases
from fleet.liveness import State
from fleet.models import Device, DeviceStatus, HealthRecord
from fleet.ota.gate import FIGURES, Breach, FailureRate, boot_count, compare, failure_breach
from fleet.ota.models import Release
from fleet.ota.releases import Releases
from fleet.ota.rollout_models import Rollout, RolloutDevice
from fleet.ota.states import BAD, IN_FLIGHT, TERMINAL, DeviceState, RolloutStatus
from fleet.ota.windows import check_timezone, open_now, parse_windows
from fleet.settings import Settings
from fleet.tasks import turn_to_end

log = logging.getLogger(__name__)

ENGINE_ACTOR = "rollout-engine"  # who the audit log names for what the engine decides itself
OFFERS_PER_TICK = 2000  # offers sent in one tick, whatever the rate
CLEARS_PER_TICK = 2000  # retained offers cleared in one tick
PUBLISH_CONCURRENCY = 100  # publishes awaiting their PUBACK at once (the link allows 100 in flight)
GATE_DEVICES = 1000  # updated devices of a phase the gate judges (the first by rank)
HEALTH_SAMPLES = 240  # health reports per device and window the gate reads (the newest)
REASON_DEVICES = 20  # devices named in a pause reason
UPDATE_BATCH = 500  # rows in one UPDATE
ROLLBACK = "rollback"
INSTALL = "install"


def offer_id_of(rollout_id: int, rank: int, action: str) -> str:
    """`r<rollout>-d<rank>`, `-rb` for a rollback: unique per device and offer, ≤ 64 characters."""
    return f"r{rollout_id}-d{rank}" + ("-rb" if action == ROLLBACK else "")


def reason_of_breach(figure: str, breaches: Sequence[tuple[str, float | None, float | None]],
                     rollout: Rollout, **extra: Any) -> dict[str, Any]:
    """A pause reason: the figure, the devices (at most REASON_DEVICES) and their before/after."""
    shown = breaches[:REASON_DEVICES]
    return {"figure": figure, "phase": rollout.phase, "count": len(breaches),
            "devices": [device for device, _, _ in shown],
            "before": {device: b for device, b, _ in shown if b is not None},
            "after": {device: a for device, _, a in shown if a is not None}, **extra}


class RolloutEngine:
    """The `fleet-rollouts` task. `nudge()` makes the next tick start now."""

    def __init__(self, link: MqttLink, settings: Settings, *, tick_s: float = 1.0,
                 releases: Releases | None = None, leases: Leases | None = None) -> None:
        self.link = link
        self.leases = leases  # several instances: ticks only while this one holds the lease "rollouts"
        self.settings = settings
        self.tick_s = tick_s
        self.releases = releases or Releases(settings)
        self._wake = asyncio.Event()
        self._last_offer_tick: dict[int, float] = {}
        self.ticks = 0
        self.offers_sent = 0
        self.clears_sent = 0
        self.last_error: str | None = None

    def nudge(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await turn_to_end(self._leased_tick())
            except Exception as err:
                kind = type(err).__name__
                if self.last_error != kind:
                    log.error("rollout engine: a tick failed; trying again every %.1f s", self.tick_s,
                              exc_info=err)
                self.last_error = kind
            else:
                if self.last_error is not None:
                    log.info("rollout engine works again")
                self.last_error = None
            self.ticks += 1
            try:
                async with asyncio.timeout(self.tick_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _leased_tick(self) -> None:
        if self.leases is None or await self.leases.hold("rollouts"):
            await self.tick()

    async def tick(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        busy = set(await RolloutDevice.filter(Q(offer_live=True) | Q(action=ROLLBACK, state=DeviceState.PENDING))
                   .distinct().values_list("rollout_id", flat=True))
        rollouts = await Rollout.filter(Q(status__in=[RolloutStatus.RUNNING, RolloutStatus.PAUSED])
                                        | Q(id__in=list(busy))).order_by("id")
        for rollout in rollouts:
            await self.tend(rollout, now)

    async def tend(self, rollout: Rollout, now: datetime) -> None:
        await self._time_out(rollout, now)
        await self._clear(rollout)
        budget = await self._budget(rollout, now)
        budget -= await self._offer(rollout, RolloutDevice.filter(rollout_id=rollout.id, action=ROLLBACK,
                                                                  state=DeviceState.PENDING), budget, now)
        if rollout.status is not RolloutStatus.RUNNING:
            return
        if await self._failure_pause(rollout, now):
            return
        zone = check_timezone(rollout.timezone)
        windows = parse_windows(rollout.windows)
        pending = RolloutDevice.filter(rollout_id=rollout.id, action=INSTALL, state=DeviceState.PENDING,
                                       phase__lte=rollout.phase)
        keys = [str(k) for k in await pending.distinct().values_list("window", flat=True)]
        open_keys = [k for k in keys if open_now(windows, k, now, zone)]
        if open_keys and budget > 0:
            await self._offer(rollout, pending.filter(window__in=open_keys), budget, now)
        await self._advance(rollout, now)

    # -- 1. timeouts ------------------------------------------------------------------------------
    async def _time_out(self, rollout: Rollout, now: datetime) -> None:
        rows = RolloutDevice.filter(rollout_id=rollout.id)
        silent = now - timedelta(seconds=rollout.offer_timeout_s)
        waiting = [s for s in IN_FLIGHT if s is not DeviceState.REBOOTING]
        n = await rows.filter(state__in=waiting, reported_at__lt=silent).update(
            state=DeviceState.FAILED, reason=f"timeout: no report for {rollout.offer_timeout_s} s", done_at=now)
        gone = now - timedelta(seconds=rollout.online_within_s)
        n += await rows.filter(state=DeviceState.REBOOTING, reported_at__lt=gone).update(
            state=DeviceState.FAILED, reason=f"offline: not back within {rollout.online_within_s} s", done_at=now)
        if n:
            log.warning("rollout %d: %d devices failed by the fleet's timeouts", rollout.id, n)

    # -- 2. clearing retained offers -----------------------------------------------------------
    async def _clear(self, rollout: Rollout) -> None:
        done = Q(state__in=list(TERMINAL))
        if rollout.status is RolloutStatus.ABORTED:
            done |= Q(action=INSTALL)
        rows = await (RolloutDevice.filter(rollout_id=rollout.id, offer_live=True).filter(done)
                      .limit(CLEARS_PER_TICK).values_list("id", "device_id"))
        if not rows:
            return
        cleared = await self._publish_all([(int(i), device_topic(str(d), "ota/offer"), b"") for i, d in rows])
        if cleared:
            await RolloutDevice.filter(id__in=cleared).update(offer_live=False)
            self.clears_sent += len(cleared)

    # -- 3/4. offers ---------------------------------------------------------------------------
    async def _budget(self, rollout: Rollout, now: datetime) -> int:
        """Offers this tick may send: the minute's share of the time since the last tick, and what
        the last 60 s leave of `offers_per_min`."""
        clock = time.monotonic()
        elapsed = clock - self._last_offer_tick.get(rollout.id, clock - self.tick_s)
        self._last_offer_tick[rollout.id] = clock
        share = max(1, math.ceil(rollout.offers_per_min * min(elapsed, 60.0) / 60))
        recent = await RolloutDevice.filter(rollout_id=rollout.id, offered_at__gt=now - timedelta(seconds=60)).count()
        return max(0, min(OFFERS_PER_TICK, share, rollout.offers_per_min - recent))

    async def _offer(self, rollout: Rollout, query: Any, budget: int, now: datetime) -> int:
        """Offer the first `budget` rows of `query` by rank; returns how many went out.

        The rows are claimed first: locked with `SELECT … FOR UPDATE SKIP LOCKED` (PostgreSQL) and
        stored as offered in one transaction, so a second fleet instance's engine neither waits for
        them nor offers them again (docs/fleet.md, "Several instances")."""
        if budget <= 0:
            return 0
        async with in_transaction() as conn:
            rows: list[RolloutDevice] = await (query.order_by("rank").limit(budget)
                                               .select_for_update(skip_locked=True).using_db(conn))
            if not rows:
                return 0
            devices = {d.id: d for d in await Device.filter(id__in=[r.device_id for r in rows]).only(
                "id", "status", "birth").using_db(conn)}
            retired: list[RolloutDevice] = []
            by_id: dict[int, RolloutDevice] = {}
            for row in rows:
                device = devices.get(row.device_id)
                if device is None or device.status == DeviceStatus.DECOMMISSIONED:
                    row.state, row.reason, row.done_at = DeviceState.FAILED, "decommissioned", now
                    retired.append(row)
                    continue
                row.offer_id = offer_id_of(rollout.id, row.rank, row.action)
                by_id[row.id] = row
                if row.action == INSTALL:
                    row.boots_before = boot_count(device.birth)
            if retired:
                await RolloutDevice.bulk_update(retired, fields=["state", "reason", "done_at"], using_db=conn)
            # stored as offered before the publish: a device answers within milliseconds, and its
            # report must find its row offered. What shares a value goes in one statement per
            # UPDATE_BATCH rows (a bulk update of every field took seconds for 2,000 rows).
            ids = list(by_id)
            for start in range(0, len(ids), UPDATE_BATCH):
                await RolloutDevice.filter(id__in=ids[start:start + UPDATE_BATCH]).using_db(conn).update(
                    state=DeviceState.OFFERED, offer_live=True, offered_at=now, reported_at=now, reason=None,
                    pct=None, done_at=None)
            if by_id:
                await RolloutDevice.bulk_update(list(by_id.values()), fields=["offer_id", "boots_before"],
                                                batch_size=UPDATE_BATCH, using_db=conn)
        if not by_id:
            return 0
        sent: set[int] = set()
        try:
            release = await Release.get(id=rollout.release_id)
            now_s = now.timestamp()
            sends: list[tuple[int, str, bytes]] = []
            for row in by_id.values():
                offer = await self.releases.build_offer(release, row.device_id, str(row.offer_id),
                                                        row.action, now=now_s)  # type: ignore[arg-type]
                sends.append((row.id, device_topic(row.device_id, "ota/offer"), _json(offer)))
            sent = set(await self._publish_all(sends, retain=True))
        finally:
            await self._unclaim([i for i in ids if i not in sent])
        self.offers_sent += len(sent)
        return len(sent)

    async def _unclaim(self, unsent: list[int]) -> None:
        for start in range(0, len(unsent), UPDATE_BATCH):  # back to pending: offered again at a next tick
            await RolloutDevice.filter(id__in=unsent[start:start + UPDATE_BATCH], state=DeviceState.OFFERED).update(
                state=DeviceState.PENDING, offer_live=False, offered_at=None, reported_at=None)

    async def _publish_all(self, sends: Sequence[tuple[int, str, bytes]], *, retain: bool = True) -> list[int]:
        """Publish each (row id, topic, payload) retained with QoS 1; the ids whose PUBACK came.
        A link that is down stops the rest: they are tried again at the next tick."""
        gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)
        done: list[int] = []
        down = False

        async def one(row_id: int, topic: str, payload: bytes) -> None:
            nonlocal down
            async with gate:
                if down:
                    return
                try:
                    await self.link.publish(topic, payload, retain=retain)
                except LinkError as err:
                    if not down:
                        log.warning("rollout engine: publishing offers stopped: %s", err)
                    down = True
                    return
                done.append(row_id)

        await asyncio.gather(*(one(*send) for send in sends))
        return done

    # -- 4. failure rate, soak, gate -------------------------------------------------------------
    def _judged(self, rollout: Rollout, query: Any, field: str) -> Any:
        if rollout.judged_from is not None:
            return query.filter(**{f"{field}__gte": rollout.judged_from})
        return query

    async def _failure_pause(self, rollout: Rollout, now: datetime) -> bool:
        phase = RolloutDevice.filter(rollout_id=rollout.id, phase=rollout.phase, action=INSTALL,
                                     offered_at__isnull=False)
        phase = self._judged(rollout, phase, "offered_at")
        offered = await phase.count()
        if not offered:
            return False
        failed_rows = await phase.filter(state__in=list(BAD)).order_by("done_at", "rank").limit(
            REASON_DEVICES).values_list("device_id", "state", "reason")
        if not failed_rows:
            return False
        rate = FailureRate(await phase.filter(state__in=list(BAD)).count(), offered)
        if not failure_breach(rate, rollout.max_failure_pct):
            return False
        reason = {"figure": "failure_rate", "phase": rollout.phase, "count": rate.failed,
                  "devices": [str(d) for d, _, _ in failed_rows],
                  "reasons": {str(d): f"{s}: {r}" if r else str(s) for d, s, r in failed_rows},
                  "failed": rate.failed, "offered": offered, "pct": round(rate.pct, 2),
                  "max_failure_pct": rollout.max_failure_pct}
        await self.pause(rollout, reason, now)
        return True

    async def pause(self, rollout: Rollout, reason: dict[str, Any], now: datetime) -> None:
        """The engine's own pause, conditional on the rollout still running (a person may have acted)."""
        reason = {**reason, "at": now.isoformat(), "by": ENGINE_ACTOR}
        changed = await Rollout.filter(id=rollout.id, status=RolloutStatus.RUNNING).update(
            status=RolloutStatus.PAUSED, pause_reason=reason, updated_at=now)
        if changed:
            rollout.status, rollout.pause_reason = RolloutStatus.PAUSED, reason
            log.warning("rollout %d paused: %s breached on %d devices (%s)", rollout.id, reason["figure"],
                        reason["count"], ", ".join(reason["devices"][:5]))
            await audit.record(ENGINE_ACTOR, "rollout.auto_pause", str(rollout.id), reason)

    async def _advance(self, rollout: Rollout, now: datetime) -> None:
        unsettled = await RolloutDevice.filter(
            rollout_id=rollout.id, action=INSTALL, phase__lte=rollout.phase,
            state__in=[DeviceState.PENDING, *IN_FLIGHT]).exists()
        if unsettled:
            return
        if rollout.soak_started_at is None:
            rollout.soak_started_at = now
            await Rollout.filter(id=rollout.id, phase=rollout.phase, soak_started_at__isnull=True).update(
                soak_started_at=now)
            log.info("rollout %d: phase %d settled; soaking %d s", rollout.id, rollout.phase, rollout.soak_s)
        if now < rollout.soak_started_at + timedelta(seconds=rollout.soak_s):
            return
        reason = await self.gate(rollout, now)
        if reason is not None:
            await self.pause(rollout, reason, now)
            return
        last = rollout.phase >= len(rollout.sizes) - 1
        update: dict[str, Any] = ({"status": RolloutStatus.DONE, "finished_at": now} if last else
                                  {"phase": rollout.phase + 1, "phase_started_at": now, "soak_started_at": None})
        if await Rollout.filter(id=rollout.id, status=RolloutStatus.RUNNING, phase=rollout.phase).update(**update):
            what = "done" if last else f"phase {rollout.phase + 1} starts"
            log.info("rollout %d: phase %d passed its gate; %s", rollout.id, rollout.phase, what)
            await audit.record(ENGINE_ACTOR, "rollout.done" if last else "rollout.phase", str(rollout.id),
                               {"passed": rollout.phase, "phase": None if last else rollout.phase + 1})

    async def gate(self, rollout: Rollout, now: datetime) -> dict[str, Any] | None:
        """Judge the phase's updated devices (at most GATE_DEVICES, by rank): online, boots,
        health figures. The first figure breached (in that order) is the pause reason; None: healthy."""
        rows = await self._judged(rollout, RolloutDevice.filter(
            rollout_id=rollout.id, phase=rollout.phase, action=INSTALL, state=DeviceState.CONFIRMED),
            "done_at").order_by("rank").limit(GATE_DEVICES)
        if not rows:
            return None
        view = LivenessView.of(self.link, self.settings)
        devices = {d.id: d for d in await Device.filter(id__in=[r.device_id for r in rows])}
        breached: dict[str, list[tuple[str, float | None, float | None]]] = defaultdict(list)
        for row in rows:
            device = devices.get(row.device_id)
            if device is None:
                continue
            if view.judge(device).state is not State.ONLINE:
                breached["online"].append((row.device_id, None, None))
            boots = boot_count(device.birth)
            if boots is not None and row.boots_before is not None and boots - row.boots_before > rollout.max_boots:
                breached["boots"].append((row.device_id, float(row.boots_before), float(boots)))
            for breach in await self._health(rollout, row, now):
                breached[breach.figure].append((row.device_id, breach.before, breach.after))
        await RolloutDevice.bulk_update(rows, fields=["before", "after"], batch_size=500)
        order = ["online", "boots", *(f.name for f in FIGURES)]
        found = [figure for figure in order if breached.get(figure)]
        if not found:
            return None
        figure = found[0]
        extra: dict[str, Any] = {"figures": found}
        if figure == "boots":
            extra["max_boots"] = rollout.max_boots
        elif figure != "online":
            extra["tolerance_pct"] = rollout.tolerance_pct
        else:
            extra["online_within_s"] = rollout.online_within_s
        return reason_of_breach(figure, breached[figure], rollout, **extra)

    async def _health(self, rollout: Rollout, row: RolloutDevice, now: datetime) -> list[Breach]:
        """The device's health after its update (from `done_at` to now) against the same length of
        time before its offer; stores both windows' figures on the row."""
        if row.done_at is None or row.offered_at is None:
            return []
        length = now - row.done_at
        after = await HealthRecord.filter(device_id=row.device_id, received_at__gte=row.done_at).order_by(
            "-received_at").limit(HEALTH_SAMPLES).values_list("received_at", "data")
        before = await HealthRecord.filter(device_id=row.device_id, received_at__lt=row.offered_at,
                                           received_at__gte=row.offered_at - length).order_by(
            "-received_at").limit(HEALTH_SAMPLES).values_list("received_at", "data")
        breaches, figures_before, figures_after = compare(before, after, rollout.tolerance_pct)
        row.before, row.after = figures_before, figures_after
        return breaches


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
