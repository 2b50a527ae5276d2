"""Device password checks for the embedded broker, off the event loop and bounded.

A scrypt check costs ~50 ms of CPU and 16 MiB. On the event loop that serves the API and the
ingest, a stream of wrong passwords would stall both; here each check runs in a small thread
pool of its own (hashlib's scrypt releases the GIL), at most `max_waiting` checks are queued or
running, and a login beyond that is answered 'server unavailable' at once without a check.

A successful check is remembered for `cache_ttl_s` so a device that reconnects (or a flood of
reconnects with the right password) costs no scrypt. The cache key is SHA-256 over the stored
hash and the password: a rotated or revoked credential no longer matches the stored hash it was
made with, so its entries can never be hit again, and `forget` drops them at once.
"""

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import Enum

from fleet.auth.secrets import verify_password

CHECK_THREADS = 2
MAX_WAITING = 16
CACHE_SIZE = 1024
CACHE_TTL_S = 600.0


class Check(Enum):
    OK = "ok"
    WRONG = "wrong"
    BUSY = "busy"  # too many checks under way: not checked at all


class PasswordChecker:
    def __init__(self, *, threads: int = CHECK_THREADS, max_waiting: int = MAX_WAITING,
                 cache_size: int = CACHE_SIZE, cache_ttl_s: float = CACHE_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._max_waiting = max_waiting
        self._waiting = 0
        self._cache: OrderedDict[bytes, tuple[str, float]] = OrderedDict()  # key -> (username, expires)
        self._cache_size = cache_size
        self._ttl = cache_ttl_s
        self._clock = clock

    async def check(self, username: str, password: str, stored_hash: str) -> Check:
        key = hashlib.sha256(f"{stored_hash}\0{password}".encode()).digest()
        if self._cached(key):
            return Check.OK
        if self._waiting >= self._max_waiting:
            return Check.BUSY
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="broker-password")
        self._waiting += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(self._pool, verify_password, password,
                                                                  stored_hash)
        finally:
            self._waiting -= 1
        if not ok:
            return Check.WRONG
        self._remember(key, username)
        return Check.OK

    def _cached(self, key: bytes) -> bool:
        entry = self._cache.get(key)
        if entry is None:
            return False
        if entry[1] <= self._clock():
            del self._cache[key]
            return False
        self._cache.move_to_end(key)
        return True

    def _remember(self, key: bytes, username: str) -> None:
        self._cache[key] = (username, self._clock() + self._ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)  # the least recently used

    def forget(self, username: str) -> None:
        """Drop what is remembered for `username` (its credentials were rotated or revoked)."""
        for key in [k for k, (user, _) in self._cache.items() if user == username]:
            del self._cache[key]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
