"""The broker-accounts interface and the variant for a broker that does not check accounts."""

from typing import Protocol


class AccountsError(RuntimeError):
    """The broker did not take an account change; nothing was issued."""


class BrokerAccounts(Protocol):
    async def set_device_password(self, device_id: str, password: str) -> None: ...

    async def remove_device(self, device_id: str) -> None: ...


FLEET_USER = "ioc-fleet"  # the fleet's account on the embedded broker (and the documented one on Mosquitto)


def fleet_client_ids(fleet_client_id: str) -> tuple[str, str]:
    """The client ids the fleet connects with: its ingest (FLEET_MQTT_CLIENT_ID) and, on
    Mosquitto, its dynamic-security admin connection."""
    return fleet_client_id, f"{fleet_client_id}-accounts"


def reserved_for_fleet(device_id: str, *, fleet_username: str, fleet_client_id: str) -> bool:
    """A device id that is the fleet's own account or one of its client ids, which a device must
    never hold: a device's client id is its device id."""
    return device_id in {FLEET_USER, fleet_username, *fleet_client_ids(fleet_client_id)}


def refuse_reserved(device_id: str, *, fleet_username: str, fleet_client_id: str) -> None:
    if reserved_for_fleet(device_id, fleet_username=fleet_username, fleet_client_id=fleet_client_id):
        raise AccountsError(f"device id {device_id!r} is reserved for the fleet's own broker connections")


class UncheckedAccounts:
    """FLEET_BROKER_ACCOUNTS=none: a broker with no per-device accounts (an open test broker).

    Credentials are still issued and stored, but nothing enforces them. Never for production.
    """

    async def set_device_password(self, device_id: str, password: str) -> None:
        return None

    async def remove_device(self, device_id: str) -> None:
        return None
