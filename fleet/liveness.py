"""A device's connection state as the fleet judges it: one verdict for the API, the pages and alerts.

Pure: no framework, no database, no MQTT client. The inputs are what the fleet stores about a
device's presence (fleet/ingest/presence.py writes the birth/death part, the ingest the times),
the time now, and whether the fleet itself hears the broker. docs/fleet.md, "Liveness", has the
state table; every row is a case in tests/fleet/test_liveness.py.

Why the fleet judges for itself: a broker that is killed (not stopped) never sends the wills of
the connections it had, and a device that dies while the broker is down leaves no death behind.
Its health stops, and that is the one sign the fleet can rely on. Why "while the fleet hears":
a device cannot be heard while the fleet's own link is down, so that time never counts against it.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

DEFAULT_PERIOD_S = 60  # a birth that declares no period (period_s 0)
MAX_PERIOD_S = 86_400  # longer declared periods are judged as one day (devices allow 1 s to 1 day)
SET_HEALTH_PERIOD = "set_health_period"  # the core command that changes a device's period


class State(StrEnum):
    ONLINE = "online"  # connected, heard within its period x stale_after_periods
    STALE = "stale"  # connected, but nothing heard for period x stale_after_periods
    OFFLINE = "offline"  # a death, or the fleet's own verdict: nothing heard for period x silent_after_periods
    UNKNOWN = "unknown"  # the fleet does not hear the broker, so it cannot tell
    NEVER_SEEN = "never_seen"  # registered, never heard from
    DECOMMISSIONED = "decommissioned"  # retired; its messages are refused


class Reason(StrEnum):
    LOST = "lost"  # the broker sent its will (the connection broke)
    SHUTDOWN = "shutdown"  # the device said goodbye
    SILENT = "silent"  # the fleet's verdict: nothing heard for period x silent_after_periods
    OVERDUE = "overdue"  # stale: nothing heard for period x stale_after_periods
    FLEET_DISCONNECTED = "fleet_disconnected"  # the fleet is not hearing the broker


class PresenceRecord(Protocol):
    """What the fleet stores about a device's presence (fleet.models.Device has these)."""

    @property
    def status(self) -> str: ...
    @property
    def online(self) -> bool: ...
    @property
    def session(self) -> int | None: ...
    @property
    def last_seen_at(self) -> datetime | None: ...
    @property
    def last_death_at(self) -> datetime | None: ...
    @property
    def last_death_reason(self) -> str | None: ...
    @property
    def silenced_at(self) -> datetime | None: ...
    @property
    def health_period_s(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Timing:
    """How many health periods of quiet make a device stale, and offline (`silent`)."""

    stale_after_periods: int = 2
    silent_after_periods: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.stale_after_periods < self.silent_after_periods:
            raise ValueError("stale_after_periods must be at least 1 and below silent_after_periods")


@dataclass(frozen=True, slots=True)
class Hearing:
    """The fleet's own link: `listening_for` is how long it has heard the broker without a break
    (connected, subscribed, its probe coming back); None while it does not."""

    listening_for: timedelta | None

    @property
    def listening(self) -> bool:
        return self.listening_for is not None


@dataclass(frozen=True, slots=True)
class Verdict:
    state: State
    reason: Reason | None = None
    # when the quiet that counts began: the last message, or when the fleet began to hear again
    quiet_since: datetime | None = None


def judge(device: PresenceRecord, now: datetime, hearing: Hearing, timing: Timing) -> Verdict:
    """The device's state; the first row of the table that holds (docs/fleet.md, "Liveness")."""
    if device.status in ("decommissioned", "replaced"):  # retired (replaced: swapped out of its asset)
        return Verdict(State.DECOMMISSIONED)
    if device.session is None and device.last_seen_at is None:
        return Verdict(State.NEVER_SEEN)
    if hearing.listening_for is None:
        return Verdict(State.UNKNOWN, Reason.FLEET_DISCONNECTED)
    if not device.online:
        return Verdict(State.OFFLINE, offline_reason(device))
    heard_from = now - hearing.listening_for
    quiet_since = max(device.last_seen_at, heard_from) if device.last_seen_at is not None else heard_from
    period = timedelta(seconds=device.health_period_s)
    if now - quiet_since > period * timing.silent_after_periods:
        return Verdict(State.OFFLINE, Reason.SILENT, quiet_since)
    if now - quiet_since > period * timing.stale_after_periods:
        return Verdict(State.STALE, Reason.OVERDUE, quiet_since)
    return Verdict(State.ONLINE, None, quiet_since)


def offline_reason(device: PresenceRecord) -> Reason | None:
    """Why an offline device went: the newer of its last death and the fleet's silent verdict."""
    silenced, died = device.silenced_at, device.last_death_at
    if silenced is not None and (died is None or silenced >= died):
        return Reason.SILENT
    try:
        return Reason(device.last_death_reason) if device.last_death_reason else None
    except ValueError:
        return None


def revives(online: bool, ended_session: int | None, ses: int) -> bool:
    """Whether a numbered message of stream `ses` makes the device online.

    Any message of a session no death has ended proves the connection stands: it undoes the
    fleet's own `silent` verdict (a device whose connection stood through its silence sends its
    next health), and a device whose birth the fleet missed is online with its first message.
    A message of an ended session is a store-and-forward replay or a late delivery of a
    connection that is gone; after a death only a birth brings a device back.
    """
    return online or ended_session is None or ses > ended_session


def expected_period(declared: Any) -> int:
    """The health period the fleet judges by, from a declared one (a birth's `period_s`)."""
    if not isinstance(declared, int) or isinstance(declared, bool) or declared < 0:
        return DEFAULT_PERIOD_S
    if declared == 0:
        return DEFAULT_PERIOD_S
    return min(declared, MAX_PERIOD_S)


def period_from_result(status: str, detail: Any) -> int | None:
    """The new period in an `ok` answer to `set_health_period` (both device kinds answer
    `{"period_s": n}`); None when this answer says nothing about it."""
    if status != "ok" or not isinstance(detail, dict):
        return None
    value = detail.get("period_s")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return None
    return expected_period(value)


def period_from_desired(doc: Any) -> int | None:
    """The period a desired-state document sets (`health_period_s`), once the device applied it."""
    if not isinstance(doc, dict):
        return None
    value = doc.get("health_period_s")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return None
    return expected_period(value)
