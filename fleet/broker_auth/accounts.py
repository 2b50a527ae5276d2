"""The broker-accounts interface and the variant for a broker that does not check accounts."""

from typing import Protocol


class AccountsError(RuntimeError):
    """The broker did not take an account change; nothing was issued."""


class BrokerAccounts(Protocol):
    async def set_device_password(self, device_id: str, password: str) -> None: ...

    async def remove_device(self, device_id: str) -> None: ...


class UncheckedAccounts:
    """FLEET_BROKER_ACCOUNTS=none: a broker with no per-device accounts (an open test broker).

    Credentials are still issued and stored, but nothing enforces them. Never for production.
    """

    async def set_device_password(self, device_id: str, password: str) -> None:
        return None

    async def remove_device(self, device_id: str) -> None:
        return None
