"""Throttling of guessing: failed log-ins, unknown enrollment tokens and login-link codes.

Free of HTTP and storage: the routes ask `check` before doing any work, report `failed` or
`succeeded` afterwards, and turn a refusal into 429 + Retry-After. State lives in memory, per
fleet process, in bounded tables (docs/identity.md "Throttling" gives the policy and numbers).
"""

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass(frozen=True)
class Policy:
    free: int  # failures allowed before any delay
    base_s: float  # the first delay; each further failure doubles it
    cap_s: float  # no delay is longer: a lock-out is always bounded
    forget_s: float  # an entry with no failure for this long (and no lock) is dropped
    max_entries: int  # at the bound the least recently touched entry is dropped


@dataclass
class _Entry:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0
    refused: int = 0  # attempts refused while locked since the last lock was reported


@dataclass(frozen=True)
class Lock:
    """A delay that a failure has just imposed: reported once, in the audit log."""

    scope: str
    failures: int
    refused_meanwhile: int
    retry_after_s: int


class Throttle:
    """Per-key exponential delay after `policy.free` failures, capped; bounded and expiring."""

    def __init__(self, scope: str, policy: Policy, clock: Clock = time.monotonic) -> None:
        self.scope = scope
        self.policy = policy
        self.clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: Hashable, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and now >= entry.locked_until and now - entry.last_failure > self.policy.forget_s:
            del self._entries[key]
            return None
        return entry

    def retry_after(self, key: Hashable) -> int:
        """Seconds until `key` may try again (0: now); a refusal is counted for the next report."""
        now = self.clock()
        entry = self._live(key, now)
        if entry is None or now >= entry.locked_until:
            return 0
        entry.refused += 1
        return max(1, math.ceil(entry.locked_until - now))

    def failed(self, key: Hashable) -> Lock | None:
        """Count a failure; returns the lock it starts, if it starts one."""
        now = self.clock()
        entry = self._live(key, now) or _Entry()
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.policy.max_entries:
            self._entries.popitem(last=False)
        entry.failures += 1
        entry.last_failure = now
        over = entry.failures - self.policy.free
        if over <= 0:
            return None
        delay = min(self.policy.cap_s, self.policy.base_s * 2.0 ** min(over - 1, 64))
        if now < entry.locked_until:
            # a concurrent attempt that was admitted before the lock: it lengthens the lock but is
            # reported with it, so parallel guessing does not multiply the audit rows
            entry.refused += 1
            entry.locked_until = max(entry.locked_until, now + delay)
            return None
        entry.locked_until = now + delay
        lock = Lock(self.scope, entry.failures, entry.refused, max(1, math.ceil(delay)))
        entry.refused = 0
        return lock

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)


@dataclass(frozen=True)
class Refusal:
    scope: str  # which limit refused: "account-from-address", "address", "account", "secrets", "concurrent"
    retry_after_s: int


# Log-ins (docs/identity.md "Throttling"). Seconds.
PAIR = Policy(free=5, base_s=1, cap_s=15 * 60, forget_s=3600, max_entries=10_000)
ADDRESS = Policy(free=20, base_s=1, cap_s=15 * 60, forget_s=3600, max_entries=10_000)
ACCOUNT = Policy(free=30, base_s=1, cap_s=5 * 60, forget_s=3600, max_entries=10_000)
TRUST_S = 30 * 24 * 3600  # an address a person logged in from is exempt from the account limit
TRUST_MAX = 10_000
# Password checks in progress at once: without a bound, a burst of parallel guesses would all be
# admitted in the instant before the first of them fails and starts a lock.
IN_FLIGHT_PAIR = 1
IN_FLIGHT_ADDRESS = 4
IN_FLIGHT_ACCOUNT = 4
# Enrollment tokens and login-link codes presented by one address.
SECRETS = Policy(free=10, base_s=1, cap_s=15 * 60, forget_s=3600, max_entries=10_000)


@dataclass
class LoginGuard:
    """Three limits on failed log-ins, so that guessing is slow and a lock-out is short.

    - one account from one address (a typing person, a script with a wrong password);
    - one address, whatever the account (spraying many accounts);
    - one account, whatever the address (a guesser spread over many addresses). Only this one
      could lock the owner out, so it has the shortest cap and does not apply to an address the
      owner logged in from recently.

    `admit` before the password is looked at; `done` after, always (it ends the attempt).
    """

    clock: Clock = time.monotonic
    pair: Throttle = field(init=False)
    address: Throttle = field(init=False)
    account: Throttle = field(init=False)
    _trusted: OrderedDict[tuple[str, str], float] = field(init=False, default_factory=OrderedDict)
    # attempts in progress; an entry exists only while its count is above zero
    _in_flight: dict[tuple[str, Hashable], int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.pair = Throttle("account-from-address", PAIR, self.clock)
        self.address = Throttle("address", ADDRESS, self.clock)
        self.account = Throttle("account", ACCOUNT, self.clock)

    def _is_trusted(self, address: str, username: str) -> bool:
        since = self._trusted.get((address, username))
        if since is None:
            return False
        if self.clock() - since > TRUST_S:
            del self._trusted[(address, username)]
            return False
        return True

    def admit(self, address: str, username: str) -> "Attempt | Refusal":
        """A refusal before the password is even looked at, or an attempt now in flight."""
        username = username[:64]
        keys: list[tuple[Throttle, Hashable, int]] = [(self.pair, (address, username), IN_FLIGHT_PAIR),
                                                      (self.address, address, IN_FLIGHT_ADDRESS)]
        if not self._is_trusted(address, username):
            keys.append((self.account, username, IN_FLIGHT_ACCOUNT))
        waits = [(throttle.scope, throttle.retry_after(key)) for throttle, key, _ in keys]
        scope, wait = max(waits, key=lambda item: item[1])
        if wait:
            return Refusal(scope, wait)
        if any(self._in_flight.get((throttle.scope, key), 0) >= limit for throttle, key, limit in keys):
            return Refusal("concurrent", 1)
        for throttle, key, _ in keys:
            slot = (throttle.scope, key)
            self._in_flight[slot] = self._in_flight.get(slot, 0) + 1
        return Attempt(address, username, tuple(keys))

    def done(self, attempt: "Attempt", *, ok: bool | None) -> list[Lock]:
        """End an admitted attempt: ok=True logged in, False refused, None neither (an error).

        Returns the locks a refusal started, for the audit log.
        """
        for throttle, key, _ in attempt.keys:
            slot = (throttle.scope, key)
            left = self._in_flight.get(slot, 0) - 1
            if left > 0:
                self._in_flight[slot] = left
            else:
                self._in_flight.pop(slot, None)
        if ok is None:
            return []
        pair = (attempt.address, attempt.username)
        if ok:
            # the address and account counters stay: a guesser with an account of their own must
            # not be able to reset them by logging in between guesses
            self.pair.forget(pair)
            self._trusted[pair] = self.clock()
            self._trusted.move_to_end(pair)
            while len(self._trusted) > TRUST_MAX:
                self._trusted.popitem(last=False)
            return []
        locks = [throttle.failed(key) for throttle, key, _ in attempt.keys]
        return [lock for lock in locks if lock is not None]


@dataclass(frozen=True)
class Attempt:
    """A log-in admitted by `LoginGuard.admit`, in flight until `LoginGuard.done`."""

    address: str
    username: str
    keys: tuple[tuple[Throttle, Hashable, int], ...]


@dataclass
class Guards:
    """All the throttles of one fleet process."""

    clock: Clock = time.monotonic
    login: LoginGuard = field(init=False)
    secrets: Throttle = field(init=False)

    def __post_init__(self) -> None:
        self.login = LoginGuard(self.clock)
        self.secrets = Throttle("secrets", SECRETS, self.clock)

    def check_secret(self, address: str) -> Refusal | None:
        wait = self.secrets.retry_after(address)
        return Refusal(self.secrets.scope, wait) if wait else None


_WHY = {
    "account-from-address": "too many failed log-ins for this account from this address",
    "address": "too many failed log-ins from this address",
    "account": "too many failed log-ins for this account",
    "concurrent": "another log-in for this account or address is being checked",
    "secrets": "too many refused tokens or codes from this address",
}


class Throttled(Exception):
    """Refused by a throttle (429): the message says why and when to try again."""

    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal
        super().__init__(f"{_WHY.get(refusal.scope, 'too many attempts')}; "
                         f"try again in {refusal.retry_after_s} s")
