"""Counting a hotspot's accesses and distinct users per hour and per day without keeping a MAC.

A MAC address is turned, the moment it is read, into a pseudonym: HMAC-SHA256 under the day's
key, truncated to 64 bits. The key is 32 random bytes made at the start of each (local) day and
destroyed when the day ends, so pseudonyms of different days cannot be linked, and nobody who
later reads the counts, the state file or the memory can tell which device a pseudonym was.
Nothing here stores, logs or returns a MAC.

- an **access** is a session start (AP-STA-CONNECTED of a station not already connected);
- a **user** is a distinct pseudonym within the hour or the day;
- stations with a locally administered ("randomised") MAC, the privacy MACs of phones, are
  counted apart (`random_accesses`, `random_users`): one phone may show several of them.

Key policy: the key lives in memory. With a `state_path`, the key and the day's pseudonyms are
also kept in that file (mode 0600, replaced atomically) so a restart within the day does not count
the same users twice; at the end of the day the file is deleted before the new day's is written.
Bound: at most `max_users` pseudonyms a day; past it, new users are counted as accesses only and
the day is flagged `users_capped`. A station connected across midnight is not carried over (its
pseudonym changes with the key).
"""

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
HOUR_S = 3600
DAY_S = 86_400


def normalise_mac(text: str) -> str | None:
    """'AA-BB-CC-DD-EE-FF' / 'aabbccddeeff' / 'aa:bb:...' -> 'aa:bb:cc:dd:ee:ff', else None."""
    text = text.strip().lower()
    if not _MAC.match(text):
        return None
    digits = re.sub(r"[:-]", "", text)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def is_randomised(mac: str) -> bool:
    """A locally administered MAC: the second-least-significant bit of the first octet."""
    return bool(int(mac[:2], 16) & 0x02)


def pseudonym(key: bytes, mac: str) -> str:
    return hmac.new(key, mac.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(slots=True)
class Tally:
    start_s: int  # the period's start, Unix seconds
    accesses: int = 0
    random_accesses: int = 0
    users: set[str] = field(default_factory=set)
    random_users: set[str] = field(default_factory=set)

    def count(self, name: str, randomised: bool) -> None:
        if randomised:
            self.random_accesses += 1
            self.random_users.add(name)
        else:
            self.accesses += 1
            self.users.add(name)


@dataclass(frozen=True, slots=True)
class Report:
    period: Literal["hour", "day"]
    start_s: int
    accesses: int
    users: int
    random_accesses: int
    random_users: int
    connected: int
    users_capped: bool = False

    def readings(self) -> dict[str, int]:
        return {
            "period_s": HOUR_S if self.period == "hour" else DAY_S,
            "start_s": self.start_s,
            "accesses": self.accesses,
            "users": self.users,
            "random_accesses": self.random_accesses,
            "random_users": self.random_users,
            "connected": self.connected,
            "users_capped": int(self.users_capped),
        }


class HotspotCounter:
    def __init__(
        self, now_ms: int, *, tz_min: int = 0, state_path: Path | None = None, max_users: int = 200_000
    ) -> None:
        self.tz_s = tz_min * 60
        self.state_path = state_path
        self.max_users = max_users
        self.users_capped = False
        self._connected: set[str] = set()
        now_s = now_ms // 1000
        self._day_index = self._day(now_s)
        self._key = secrets.token_bytes(32)
        self.day = Tally(self._start(now_s, DAY_S))
        self.hour = Tally(self._start(now_s, HOUR_S))
        self._restore(now_s)

    # -- time -------------------------------------------------------------------------------

    def _day(self, now_s: int) -> int:
        return (now_s + self.tz_s) // DAY_S

    def _start(self, now_s: int, period: int) -> int:
        return (now_s + self.tz_s) // period * period - self.tz_s

    # -- events -----------------------------------------------------------------------------

    def connected(self, mac: str, now_ms: int) -> list[Report]:
        reports = self.roll(now_ms)
        name = pseudonym(self._key, mac)
        if name in self._connected:
            return reports  # a re-association without a disconnect is the same session
        self._connected.add(name)
        randomised = is_randomised(mac)
        known = name in self.day.users or name in self.day.random_users
        if not known and len(self.day.users) + len(self.day.random_users) >= self.max_users:
            self.users_capped = True
            self.day.accesses += not randomised
            self.day.random_accesses += randomised
            self.hour.accesses += not randomised
            self.hour.random_accesses += randomised
            return reports
        self.day.count(name, randomised)
        self.hour.count(name, randomised)
        return reports

    def disconnected(self, mac: str, now_ms: int) -> list[Report]:
        reports = self.roll(now_ms)
        self._connected.discard(pseudonym(self._key, mac))
        return reports

    @property
    def connected_now(self) -> int:
        return len(self._connected)

    # -- periods ----------------------------------------------------------------------------

    def roll(self, now_ms: int) -> list[Report]:
        """Close the hour and the day if `now_ms` is past them; their reports, oldest first."""
        now_s = now_ms // 1000
        reports = []
        if self._start(now_s, HOUR_S) > self.hour.start_s:
            reports.append(self._report("hour", self.hour))
            self.hour = Tally(self._start(now_s, HOUR_S))
        if self._day(now_s) != self._day_index:
            reports.append(self._report("day", self.day))
            self._new_day(now_s)
        if reports:
            self.save()
        return reports

    def _report(self, period: Literal["hour", "day"], tally: Tally) -> Report:
        return Report(
            period,
            tally.start_s,
            tally.accesses,
            len(tally.users),
            tally.random_accesses,
            len(tally.random_users),
            len(self._connected),
            self.users_capped and period == "day",
        )

    def _new_day(self, now_s: int) -> None:
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)  # the old key goes with its day
        self._key = secrets.token_bytes(32)
        self._day_index = self._day(now_s)
        self.day = Tally(self._start(now_s, DAY_S))
        self._connected.clear()  # pseudonyms of yesterday's key mean nothing today
        self.users_capped = False

    # -- the state file (key and the day's pseudonyms, for a restart within the day) ----------

    def save(self) -> None:
        if self.state_path is None:
            return
        body = {
            "day": self._day_index,
            "key": self._key.hex(),
            "day_tally": _tally_json(self.day),
            "hour_tally": _tally_json(self.hour),
            "connected": sorted(self._connected),
            "users_capped": self.users_capped,
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def _restore(self, now_s: int) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            body = json.loads(self.state_path.read_text())
            same_day = body["day"] == self._day_index
            if same_day:
                key = bytes.fromhex(body["key"])
                day = _tally_from(body["day_tally"])
                hour = _tally_from(body["hour_tally"])
                connected = set(body["connected"])
        except (OSError, ValueError, KeyError, TypeError):
            same_day = False  # unreadable: start the day afresh (counts may double for today)
        if not same_day:
            self.state_path.unlink(missing_ok=True)  # a past day's key must not survive
            return
        self._key, self.day, self._connected = key, day, connected
        self.users_capped = bool(body.get("users_capped"))
        if hour.start_s == self.hour.start_s:
            self.hour = hour


def _tally_json(tally: Tally) -> dict[str, object]:
    return {
        "start_s": tally.start_s,
        "accesses": tally.accesses,
        "random_accesses": tally.random_accesses,
        "users": sorted(tally.users),
        "random_users": sorted(tally.random_users),
    }


def _tally_from(body: dict[str, object]) -> Tally:
    return Tally(
        int(body["start_s"]),  # type: ignore[call-overload]
        int(body["accesses"]),  # type: ignore[call-overload]
        int(body["random_accesses"]),  # type: ignore[call-overload]
        set(body["users"]),  # type: ignore[call-overload]
        set(body["random_users"]),  # type: ignore[call-overload]
    )
