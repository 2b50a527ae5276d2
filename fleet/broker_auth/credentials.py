"""Issuing, rotating and revoking a device's MQTT credentials.

The order keeps a failure from leaving live orphans: the broker account is set first; only if the
broker took it is the new hash stored (and older ones revoked). If storing fails, the broker
account is removed again.
"""

import asyncio
from datetime import UTC, datetime
from typing import Any

from fleet.auth import audit
from fleet.auth.secrets import hash_password, new_device_password
from fleet.models import DeviceCredential
from fleet.runtime import Runtime


async def issue_credentials(runtime: Runtime, device_id: str, actor: str, source: str = "") -> dict[str, Any]:
    """New credentials for a device (revoking any older ones); the password is returned once."""
    password = new_device_password()
    await runtime.accounts.set_device_password(device_id, password)
    try:
        now = datetime.now(UTC)
        await DeviceCredential.filter(device_id=device_id, revoked_at=None).update(revoked_at=now)
        await DeviceCredential.create(device_id=device_id, secret_hash=await asyncio.to_thread(hash_password, password),
                                        created_by=actor)
    except Exception:
        await runtime.accounts.remove_device(device_id)
        raise
    await audit.record(actor, "device.credentials.issue", device_id, None, source)
    broker = runtime.device_broker
    return {"device_id": device_id,
            "mqtt": {"username": device_id, "password": password, "host": broker.host, "port": broker.port,
                     "tls": broker.tls}}


async def revoke_credentials(runtime: Runtime, device_id: str, actor: str, source: str = "") -> int:
    """Revoke every live credential of a device; the broker disconnects it. Returns how many."""
    await runtime.accounts.remove_device(device_id)
    revoked = await DeviceCredential.filter(device_id=device_id, revoked_at=None).update(
        revoked_at=datetime.now(UTC))
    if revoked:
        await audit.record(actor, "device.credentials.revoke", device_id, {"count": revoked}, source)
    return int(revoked)
