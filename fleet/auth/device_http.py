"""Devices over HTTP: HTTP Basic with the device id and its MQTT password (docs/identity.md,
"Devices over HTTP").

The password is checked against the device's live `device_credential` hash (the same scrypt hash
the broker accounts are made from) in a worker thread. A success is remembered for CACHE_S under
a SHA-256 of (device id, password, stored hash): a rotated or revoked credential stops matching at
once, and the cache never holds a password. Failures (unknown device, no live credential, wrong
password) are throttled per client address with the enrollment policy (fleet/auth/throttle.py
SECRETS): the address then gets 429 with Retry-After, each lock one audit row.

Free of HTTP: fleet/api/device_auth.py reads the header and turns the errors into answers.
"""

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from fleet.auth import audit
from fleet.auth.secrets import verify_password
from fleet.auth.throttle import SECRETS, Clock, Refusal, Throttle, Throttled
from fleet.models import RETIRED_STATUSES, Device, DeviceCredential

CACHE_S = 600.0  # a checked (id, password, hash) is trusted this long without scrypt
CACHE_MAX = 10_000  # at the bound the oldest success is forgotten (checked again next time)
PASSWORD_MAX = 200


class DeviceAuthError(Exception):
    """A refused device: `status` 401 (who it is is not proven) or 403 (proven, but refused)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _cache_key(device_id: str, password: str, stored: str) -> bytes:
    return hashlib.sha256(b"\0".join((device_id.encode(), password.encode(), stored.encode()))).digest()


@dataclass
class DeviceHttpAuth:
    """One per fleet process: the success cache and the failure throttle."""

    clock: Clock = time.monotonic
    throttle: Throttle = field(init=False)
    _ok: OrderedDict[bytes, float] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.throttle = Throttle("device-http", SECRETS, self.clock)

    async def authenticate(self, device_id: str, password: str, source: str) -> Device:
        """The device, if `password` is its live MQTT password and it is not decommissioned.

        Throttled (429) when `source` failed too often; DeviceAuthError 401/403 otherwise."""
        wait = self.throttle.retry_after(source)
        if wait:
            raise Throttled(Refusal(self.throttle.scope, wait))
        device = await Device.get_or_none(id=device_id) if 0 < len(device_id) <= 63 else None
        credential = None
        if device is not None:
            # a decommissioned device's credentials were revoked with it: its last one still proves
            # who it is, so that it hears 403 (stop) rather than 401 (wrong password)
            retired = device.status in RETIRED_STATUSES
            credential = await DeviceCredential.filter(
                device_id=device_id, **({} if retired else {"revoked_at__isnull": True})).order_by("-id").first()
        ok = False
        if credential is not None and len(password) <= PASSWORD_MAX:
            key = _cache_key(device_id, password, credential.secret_hash)
            now = self.clock()
            seen = self._ok.get(key)
            if seen is not None and now - seen < CACHE_S:
                ok = True
            else:
                ok = await asyncio.to_thread(verify_password, password, credential.secret_hash)
                if ok:
                    self._ok[key] = now
                    self._ok.move_to_end(key)
                    while len(self._ok) > CACHE_MAX:
                        self._ok.popitem(last=False)
                elif seen is not None:
                    del self._ok[key]
        if not ok or device is None:
            lock = self.throttle.failed(source)
            if lock is not None:
                await audit.record(f"device:{device_id[:63]}", "auth.device.throttled", lock.scope,
                                   {"failures": lock.failures, "refused_meanwhile": lock.refused_meanwhile,
                                    "retry_after_s": lock.retry_after_s}, source)
            raise DeviceAuthError(401, "the device id and MQTT password do not match a live credential")
        if device.status in RETIRED_STATUSES:
            raise DeviceAuthError(403, f"device {device.id!r} is {device.status.value}")
        return device
