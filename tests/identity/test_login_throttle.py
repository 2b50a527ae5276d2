"""Guessing is throttled: passwords, enrollment tokens; lock-outs are bounded; the audit log stays small.

The attacks (issue 8, finding 9): wrong passwords as fast as one client can send them, spread
over many addresses, sprayed over many accounts; enrollment tokens guessed by the thousand.
The throttles' clock is the one thing the tests drive by hand (`Guards(clock)`), so every count
below is exact and nothing depends on the machine's speed. Addresses come from X-Forwarded-For,
which uvicorn believes from 127.0.0.1 (its default FORWARDED_ALLOW_IPS), as behind a local proxy.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.auth.throttle import ACCOUNT, PAIR, Attempt, Guards, LoginGuard, Policy, Refusal, Throttle
from tests.support.fleet import fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto

PASSWORD = "the owner's long password"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Fleet:
    http: httpx.AsyncClient  # logged in as an admin
    clock: Clock

    async def login(self, username: str, password: str, address: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.http.base_url) as anonymous:
            return await anonymous.post("/api/auth/login", json={"username": username, "password": password},
                                        headers={"X-Forwarded-For": address})

    async def audit(self, action: str) -> list[dict[str, Any]]:
        response = await self.http.get("/api/audit", params={"action": action, "limit": 1000})
        assert response.status_code == 200, response.text
        return list(response.json())


@pytest.fixture
async def fleet(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Fleet]:
    async with running_fleet(fleet_settings(f"sqlite://{tmp_path / 'f.sqlite3'}", mosquitto.url)) as http:
        clock = Clock()
        http.app.state.guards = Guards(clock)  # type: ignore[attr-defined]
        yield Fleet(http, clock)


async def _person(fleet: Fleet, username: str) -> None:
    created = await fleet.http.post("/api/users", json={"username": username, "role": "ops", "password": PASSWORD})
    assert created.status_code == 201, created.text


async def test_guessing_one_password_from_one_address(fleet: Fleet) -> None:
    await _person(fleet, "alice")
    attacker = "203.0.113.7"
    statuses = [(await fleet.login("alice", f"guess {n}", attacker)).status_code for n in range(200)]
    # 5 free guesses, the 6th starts a 1 s delay: every other guess in that second is refused unchecked
    assert statuses == [401] * 6 + [429] * 194
    refused = await fleet.login("alice", PASSWORD, attacker)  # even the right password, meanwhile
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["detail"] == ("too many failed log-ins for this account from this address; "
                                        "try again in 1 s")
    # the owner, elsewhere, is not locked out
    assert (await fleet.login("alice", PASSWORD, "198.51.100.9")).status_code == 200

    # the delay doubles with each further failure and stops at the cap
    delays = []
    for _ in range(14):
        fleet.clock.now += int(refused.headers["Retry-After"])
        assert (await fleet.login("alice", "another guess", attacker)).status_code == 401
        refused = await fleet.login("alice", "another guess", attacker)
        assert refused.status_code == 429
        delays.append(int(refused.headers["Retry-After"]))
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900, 900, 900]
    assert PAIR.cap_s == 900

    # audited: each checked guess, and each lock once; not each of the 209 refused guesses
    failed = [e for e in await fleet.audit("auth.login.failed") if e["actor"] == "alice"]
    assert len(failed) == 6 + 14 and {e["source"] for e in failed} == {attacker}
    locks = [e for e in await fleet.audit("auth.login.throttled") if e["actor"] == "alice"]
    pair_locks = [e["detail"] for e in locks if e["target"] == "account-from-address"]
    assert len(pair_locks) == 15
    assert pair_locks[-2]["refused_meanwhile"] == 194 + 1  # newest first: the second lock's row
    assert all(e["source"] == attacker for e in locks)


async def test_guessing_spread_over_many_addresses_cannot_lock_the_owner_out(fleet: Fleet) -> None:
    await _person(fleet, "bob")
    office = "192.0.2.10"
    assert (await fleet.login("bob", PASSWORD, office)).status_code == 200  # bob has logged in from here
    statuses = [(await fleet.login("bob", "guess", f"10.1.{n // 250}.{n % 250}")).status_code for n in range(31)]
    assert statuses == [401] * 31  # the 31st failure for the account starts its delay
    elsewhere = await fleet.login("bob", "guess", "10.2.0.1")
    assert elsewhere.status_code == 429
    assert elsewhere.json()["detail"].startswith("too many failed log-ins for this account;")

    delays, n = [], 0
    for _ in range(12):
        fleet.clock.now += int(elsewhere.headers["Retry-After"])
        n += 1
        assert (await fleet.login("bob", "guess", f"10.3.0.{n}")).status_code == 401
        n += 1
        elsewhere = await fleet.login("bob", "guess", f"10.3.0.{n}")
        delays.append(int(elsewhere.headers["Retry-After"]))
        # meanwhile bob logs in from where he did before: that address is exempt from this limit
        assert (await fleet.login("bob", PASSWORD, office)).status_code == 200
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300]  # capped at 5 minutes
    assert ACCOUNT.cap_s == 300
    # from a new address bob waits at most the cap, then gets in
    new_laptop = await fleet.login("bob", PASSWORD, "198.51.100.77")
    assert new_laptop.status_code == 429 and int(new_laptop.headers["Retry-After"]) <= 300
    fleet.clock.now += int(new_laptop.headers["Retry-After"])
    assert (await fleet.login("bob", PASSWORD, "198.51.100.77")).status_code == 200


async def test_spraying_many_accounts_from_one_address(fleet: Fleet) -> None:
    sprayer = "203.0.113.99"
    statuses = [(await fleet.login(f"user{n}", "Winter2024!", sprayer)).status_code for n in range(40)]
    assert statuses == [401] * 21 + [429] * 19  # 20 free failures per address, whatever the account
    refused = await fleet.login("someone-else", "Winter2024!", sprayer)
    assert refused.json()["detail"].startswith("too many failed log-ins from this address;")


async def test_the_login_page_shows_the_throttle(fleet: Fleet) -> None:
    await _person(fleet, "carol")
    base = str(fleet.http.base_url).rstrip("/")
    async with httpx.AsyncClient(base_url=base) as browser:
        headers = {"Origin": base, "X-Forwarded-For": "203.0.113.20"}
        pages = [await browser.post("/login", data={"username": "carol", "password": "wrong"}, headers=headers)
                 for _ in range(7)]
    assert [p.status_code for p in pages] == [401] * 6 + [429]
    assert pages[-1].headers["Retry-After"] == "1"
    assert ('<p class="error throttled" role="alert">too many failed log-ins for this account from this '
            'address; try again in 1 s.</p>') in pages[-1].text
    assert 'name="password"' in pages[-1].text  # the form is still there


async def test_guessing_enrollment_tokens(fleet: Fleet) -> None:
    guesser = "203.0.113.66"

    async def guess(n: int) -> httpx.Response:
        async with httpx.AsyncClient(base_url=fleet.http.base_url) as anonymous:
            return await anonymous.post("/api/enroll", json={"token": f"ioc_guess-{n:06d}"},
                                        headers={"X-Forwarded-For": guesser})

    statuses = [(await guess(n)).status_code for n in range(300)]
    assert statuses == [401] * 11 + [429] * 289
    last = await guess(300)
    assert last.headers["Retry-After"] == "1" and "too many refused tokens" in last.json()["detail"]
    fleet.clock.now += 1
    assert (await guess(301)).status_code == 401
    refused = [e for e in await fleet.audit("enroll.refused") if e["source"] == guesser]
    assert len(refused) == 12  # one row per guess that was looked at, not per guess
    locks = [e["detail"] for e in await fleet.audit("auth.secrets.throttled") if e["source"] == guesser]
    assert [d["refused_meanwhile"] for d in locks] == [290, 0]  # newest first
    # a real device elsewhere enrolls as usual
    issued = (await fleet.http.post("/api/enrollment-tokens", json={"kind": "pi", "site": "market"})).json()
    async with httpx.AsyncClient(base_url=fleet.http.base_url) as device:
        enrolled = await device.post("/api/enroll", json={"token": issued["token"]},
                                     headers={"X-Forwarded-For": "198.51.100.5"})
    assert enrolled.status_code == 200, enrolled.text


# The throttle's own bounds, without HTTP.

def test_tables_are_bounded_and_forget() -> None:
    clock = Clock()
    throttle = Throttle("t", Policy(free=1, base_s=1, cap_s=60, forget_s=600, max_entries=100), clock)
    for n in range(10_000):
        throttle.failed(f"address-{n}")
    assert len(throttle) == 100  # the least recently touched went first
    assert throttle.failed("address-9999") is not None  # a recent one was kept: its 2nd failure locks
    clock.now += 60 + 600 + 1
    assert throttle.retry_after("address-9999") == 0 and throttle.failed("address-9999") is None  # forgotten


def test_parallel_guesses_are_not_all_admitted() -> None:
    """Without this, a burst sent at once would all be checked before the first failure locks."""
    guard = LoginGuard(Clock())
    first = guard.admit("203.0.113.1", "dave")
    assert isinstance(first, Attempt)
    assert guard.admit("203.0.113.1", "dave") == Refusal("concurrent", 1)  # one check per account and address
    others = [guard.admit("203.0.113.1", f"user{n}") for n in range(5)]
    assert [isinstance(a, Attempt) for a in others] == [True, True, True, False, False]  # 4 per address
    assert guard.done(first, ok=False) == []  # a free failure: no lock
    again = guard.admit("203.0.113.1", "dave")
    assert isinstance(again, Attempt)  # its slot is free again
    assert isinstance(guard.admit("203.0.113.1", "erin"), Refusal)  # the address has 4 in flight
    for attempt in [again, *others[:3]]:
        assert isinstance(attempt, Attempt)
        guard.done(attempt, ok=None)
    assert isinstance(guard.admit("203.0.113.1", "erin"), Attempt)
