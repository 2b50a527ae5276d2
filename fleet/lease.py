"""Leases: jobs that one fleet instance runs at a time (docs/fleet.md, "Several instances").

A lease is a row of `fleet_lease` (name, holder, until). `hold(name)` takes it by a conditional
UPDATE (ours already, or expired) — the database decides between instances asking at once — or
creates it when there is none. The holder renews it at every turn of its job; an instance that dies
loses it when `until` passes (FLEET_LEASE_S), and the next instance that asks has it. A clean stop
gives its leases back. Times are the instances' clocks: they must agree to well within
FLEET_LEASE_S (NTP). On SQLite there is one instance: it always holds its leases.
"""

import logging
from datetime import UTC, datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from fleet.models import Lease
from fleet.worker import Tick

log = logging.getLogger(__name__)


class Leases:
    """This instance's leases: `hold(name)` before each turn of a job that must not run twice."""

    def __init__(self, holder: str, lease_s: float) -> None:
        self.holder = holder
        self.ttl = timedelta(seconds=lease_s)
        self.held: set[str] = set()

    async def hold(self, name: str, now: datetime | None = None) -> bool:
        """True if this instance holds `name` until now + FLEET_LEASE_S (taken or renewed)."""
        now = now or datetime.now(UTC)
        mine = Q(holder=self.holder) | Q(until__lt=now)
        got = bool(await Lease.filter(mine, name=name).update(holder=self.holder, until=now + self.ttl))
        if not got:
            try:
                await Lease.create(name=name, holder=self.holder, until=now + self.ttl)
                got = True
            except IntegrityError:  # another instance holds it (or created it at the same moment)
                got = False
        if got != (name in self.held):
            log.info("lease %s %s by %s", name, "taken" if got else "lost", self.holder)
            (self.held.add if got else self.held.discard)(name)
        return got

    def guard(self, name: str, tick: Tick) -> "Leased":
        """`tick` run only on the turns this instance holds `name`."""
        return Leased(self, name, tick)

    async def release(self) -> None:
        """Give back what this instance holds (a clean stop): another takes it at its next turn."""
        if self.held:
            await Lease.filter(holder=self.holder, name__in=sorted(self.held)).update(
                until=datetime(1970, 1, 1, tzinfo=UTC))
            self.held.clear()


class Leased:
    """A worker part's tick, run only on the turns its instance holds the lease; `__self__` is the
    part's, as for the bound method it wraps (tests reach a part through it)."""

    def __init__(self, leases: Leases, name: str, tick: Tick) -> None:
        self.leases = leases
        self.name = name
        self.tick = tick

    async def __call__(self, now: datetime) -> None:
        if await self.leases.hold(self.name):
            await self.tick(now)

    @property
    def __self__(self) -> object:
        return getattr(self.tick, "__self__", None)

