"""`hotspot`: counts a public wifi hotspot's accesses and distinct users, never a MAC address.

Station events come from hostapd's control socket (`source = "hostapd"`, `ctrl_path`) or from log
lines (`source = "log"`, `log_path`, with `connect_pattern` / `disconnect_pattern` for access
points other than hostapd). Every MAC is turned into a per-day keyed pseudonym as soon as it is
parsed (see `hotspot_counter.py` for the key policy) and is never logged, stored or sent.

Telemetry (role `hotspot`), at the end of every hour and every day (local time, `tz_min`):
`{"period_s": 3600 | 86400, "start_s", "accesses", "users", "random_accesses", "random_users",
"connected", "users_capped"}` with `at_ms` the period's start (the fleet files it there). The
counts wait in the store-and-forward queue while offline.

Health: `events`, `unparsed` (lines that named no station), `source_errors`, `connected`.
Command `hotspot.counts`: the running hour and day so far (nothing is sent).
"""

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edge.commands import CommandHandler, Reply
from edge.roles.base import Number, Role, RoleContext, RoleSettings
from edge.roles.hotspot_counter import HotspotCounter, Report
from edge.roles.hotspot_sources import (
    CONNECT_PATTERN,
    DISCONNECT_PATTERN,
    HostapdControl,
    LogLines,
    Source,
    SourceError,
    StationParser,
)

TICK_S = 1.0  # hours are closed within this of their end even with no events


class HotspotSettings(RoleSettings):
    source: Literal["hostapd", "log"] = "hostapd"
    ctrl_path: str = "/var/run/hostapd/wlan0"
    local_dir: str = "/tmp"  # where the client's own control socket is bound
    ping_s: float = Field(default=10.0, gt=0, le=3600)
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    log_path: str | None = None
    log_from_start: bool = False  # read a log file from its beginning at the first open
    connect_pattern: str = CONNECT_PATTERN
    disconnect_pattern: str = DISCONNECT_PATTERN
    tz_min: int = Field(default=420, ge=-720, le=840)  # the day's boundary; Vietnam is UTC+7
    # the day key and pseudonyms, for a restart within the day (0600; deleted at day end);
    # unset: in memory only, and a restart counts that day's users again
    state_path: Path | None = None
    max_users_per_day: int = Field(default=200_000, ge=1, le=5_000_000)
    retry_max_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("connect_pattern", "disconnect_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as err:
            raise ValueError(f"not a regular expression: {err}") from err
        if "mac" not in compiled.groupindex:
            raise ValueError("needs a named group (?P<mac>...)")
        return value

    @model_validator(mode="after")
    def _check_source(self) -> "HotspotSettings":
        if self.source == "log" and not self.log_path:
            raise ValueError("a log source needs log_path")
        return self


def _wall_ms() -> int:
    return int(time.time() * 1000)


class HotspotRole(Role):
    def __init__(self, settings: HotspotSettings, context: RoleContext, *, clock: Callable[[], int] = _wall_ms) -> None:
        super().__init__(context)
        self.settings = settings
        self.clock = clock
        self.parser = StationParser(settings.connect_pattern, settings.disconnect_pattern)
        self.counter = HotspotCounter(
            clock(), tz_min=settings.tz_min, state_path=settings.state_path, max_users=settings.max_users_per_day
        )
        self.source: Source = self._make_source()
        self.events = 0
        self.unparsed = 0
        self.source_errors = 0
        self.reports_sent = 0
        self.attached = False

    def _make_source(self) -> Source:
        s = self.settings
        if s.source == "hostapd":
            return HostapdControl(s.ctrl_path, local_dir=s.local_dir, ping_s=s.ping_s, timeout_s=s.timeout_s)
        assert s.log_path is not None
        return LogLines(s.log_path, from_start=s.log_from_start)

    async def run(self) -> None:
        delay = 1.0
        try:
            while True:
                try:
                    await self.source.open()
                    self.attached = True
                    delay = 1.0
                    while True:
                        for line in await self.source.lines(TICK_S):
                            self.line(line)
                        self.tick()
                except SourceError as err:
                    self.source_errors += 1
                    self.context.log.warning("hotspot: %s (retrying in %.0f s)", err, delay)
                finally:
                    self.attached = False
                    self.source.close()
                self.tick()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)
        finally:
            self.counter.save()  # a restart within the day continues these counts

    def line(self, line: str) -> None:
        """One line from the source: count it if it names a station."""
        change = self.parser.parse(line)
        if change is None:
            self.unparsed += 1
            return
        self.events += 1
        kind, mac = change
        now = self.clock()
        if kind == "connected":
            self._send(self.counter.connected(mac, now))
        else:
            self._send(self.counter.disconnected(mac, now))

    def tick(self) -> None:
        self._send(self.counter.roll(self.clock()))

    def _send(self, reports: list[Report]) -> None:
        for report in reports:
            self.context.telemetry(report.readings(), at_ms=report.start_s * 1000)  # filed at the period's start
            self.reports_sent += 1

    def health(self) -> dict[str, Number]:
        return {
            "events": self.events,
            "unparsed": self.unparsed,
            "source_errors": self.source_errors,
            "connected": self.counter.connected_now,
            "reports": self.reports_sent,
        }

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"counts": self._counts}

    async def _counts(self, args: Mapping[str, Any]) -> Reply:
        c = self.counter
        return Reply(
            {
                period: {
                    "start_s": t.start_s,
                    "accesses": t.accesses,
                    "users": len(t.users),
                    "random_accesses": t.random_accesses,
                    "random_users": len(t.random_users),
                }
                for period, t in (("hour", c.hour), ("day", c.day))
            }
        )
