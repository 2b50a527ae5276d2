"""`sim`: a role with synthetic environmental readings, for demos and tests without hardware.

Every `period_s` it sends one telemetry message (temperature, humidity, PM2.5). When PM2.5 rises
above `pm25_alert` it sends an `air_quality` event (`start`), and `end` when it falls back: the
pattern a real sensor role follows to send what matters instead of every sample.
"""

import asyncio
import math
import random
import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from edge.commands import CommandHandler, Reply
from edge.errors import CommandError
from edge.roles.base import Number, Role, RoleContext, RoleSettings


class SimSettings(RoleSettings):
    period_s: float = Field(default=5.0, ge=0.005, le=3600)
    pm25_alert: float = Field(default=55.0, gt=0)
    seed: int | None = None


class SimRole(Role):
    def __init__(self, settings: SimSettings, context: RoleContext) -> None:
        super().__init__(context)
        self.settings = settings
        self.readings_sent = 0
        self.events_sent = 0
        self._rng = random.Random(settings.seed)
        self._pm25 = 12.0
        self._alert_id: str | None = None
        self._alerts = 0

    async def run(self) -> None:
        period = self.settings.period_s
        next_at = time.monotonic()
        while True:
            self.sample()
            next_at += period
            # After a stall (a suspended Pi), resume the period instead of sending a burst.
            next_at = max(next_at, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    def sample(self) -> None:
        """Make and send one reading (and an event when the alert threshold is crossed)."""
        hour_angle = (time.time() % 86_400) / 86_400 * 2 * math.pi
        self._pm25 = min(500.0, max(0.0, self._pm25 + self._rng.gauss(0, 1.5) - 0.02 * (self._pm25 - 15)))
        readings = {
            "temp_c": round(29 + 4 * math.sin(hour_angle) + self._rng.gauss(0, 0.2), 2),
            "humidity_pct": round(min(100.0, 75 - 12 * math.sin(hour_angle) + self._rng.gauss(0, 1)), 1),
            "pm25": round(self._pm25, 1),
        }
        self.context.telemetry(readings)
        self.readings_sent += 1
        self._check_alert()

    def _check_alert(self) -> None:
        above = self._pm25 > self.settings.pm25_alert
        if above and self._alert_id is None:
            self._alerts += 1
            self._alert_id = f"aq-{self.context.device_id}-{int(time.time())}-{self._alerts}"[:200]
            self._event("start")
        elif not above and self._alert_id is not None:
            self._event("end")
            self._alert_id = None

    def _event(self, phase: str) -> None:
        assert self._alert_id is not None
        self.context.event(
            event_id=self._alert_id,
            event_type="air_quality",
            phase=phase,
            category="other",
            data={"pm25": round(self._pm25, 1), "threshold": self.settings.pm25_alert},
        )
        self.events_sent += 1

    def health(self) -> dict[str, Number]:
        return {"readings": self.readings_sent, "events": self.events_sent}

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"spike": self._spike}

    async def _spike(self, args: Mapping[str, Any]) -> Reply:
        """`sim.spike {"pm25": n}`: jump PM2.5 to n, to demonstrate the alert event."""
        value = args.get("pm25")
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 500:
            raise CommandError("pm25 must be a number from 0 to 500")
        self._pm25 = float(value)
        self.sample()
        return Reply({"pm25": float(value)})
