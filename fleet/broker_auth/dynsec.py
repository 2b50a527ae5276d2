"""Mosquitto's dynamic-security plugin, driven over its `$CONTROL` topic.

Why dynamic security and not generated password/ACL files with a reload: changes apply at once
without touching the broker's disk (the broker may run on another host), a deleted or changed
client is disconnected by the broker immediately (so revocation is not 'at next connect'), and
several fleet instances can make the same idempotent calls. The broker stores its own salted
PBKDF2 hash; the fleet sends each new password once, over the (TLS in production) connection.

Each device's client is pinned to a client id equal to its device id (the plugin's `clientid`),
so a device cannot connect under another device's client id or the fleet's and take its session
over. Device ids that would be the fleet's own account or client ids are refused.

A broker that does not answer at the start does not stop the fleet: the admin connection is
retried in the background like the ingest's (fleet/ingest/link.py), the fleet's role is set up
once it connects, and account changes asked for meanwhile are refused at once (503 at the API),
never queued to happen later.
"""

import asyncio
import json
import logging
import ssl
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from contract.acl import device_rules, fleet_rules
from fleet.broker_auth.accounts import AccountsError, refuse_reserved, reserved_for_fleet
from fleet.ingest.link import FIRST_CONTACT_S, RECONNECT_MAX_S, RECONNECT_MIN_S
from fleet.settings import MqttTarget
from fleet.tasks import stop_tasks

log = logging.getLogger(__name__)

CONTROL = "$CONTROL/dynamic-security/v1"
FLEET_ROLE = "ioc-fleet"
ACL_TYPES = {"publish": "publishClientSend", "subscribe": "subscribeLiteral", "receive": "publishClientReceive"}
FLEET_ACL_TYPES = {**ACL_TYPES, "subscribe": "subscribePattern"}
DEFAULT_ACCESS = [  # anything not granted by a role is refused
    {"acltype": "publishClientSend", "allow": False},
    {"acltype": "publishClientReceive", "allow": False},
    {"acltype": "subscribe", "allow": False},
    {"acltype": "unsubscribe", "allow": True},
]


def device_role(device_id: str) -> str:
    return f"device-{device_id}"


def _acls(rules: list[tuple[str, str]], types: dict[str, str]) -> list[dict[str, Any]]:
    return [{"acltype": types[access], "topic": topic, "priority": 0, "allow": True} for access, topic in rules]


class DynsecAccounts:
    """An admin connection to Mosquitto's dynamic-security plugin."""

    def __init__(self, target: MqttTarget, *, client_id: str, ca_file: str | None = None,
                 timeout: float = 10.0, fleet_client_id: str | None = None) -> None:
        if not target.username or target.password is None:
            raise AccountsError("FLEET_MQTT_URL needs the fleet's user name and password for dynamic security")
        self.username: str = target.username
        # the ingest's client id (FLEET_MQTT_CLIENT_ID); ours is made from it
        self.fleet_client_id = fleet_client_id or client_id
        self.target = target
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ready = asyncio.Event()
        self._first_contact = threading.Event()  # the first attempt answered or failed
        self._refused: str | None = None
        self._answered = False  # a connection was accepted (written by paho's thread)
        self._setup: asyncio.Task[None] | None = None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        client.username_pw_set(target.username, target.password.get_secret_value())
        if target.tls:
            context = ssl.create_default_context(cafile=ca_file)
            client.tls_set_context(context)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client

    async def __aenter__(self) -> "DynsecAccounts":
        """Set the fleet's role up now if the broker answers; if it does not, once it does."""
        self._client.connect_async(self.target.host, self.target.port, 30)
        self._client.loop_start()
        await asyncio.to_thread(self._first_contact.wait, FIRST_CONTACT_S)
        if self._refused is not None:
            await self._stop()
            raise AccountsError(f"the broker refused the fleet's admin connection (dynamic security): "
                                f"{self._refused}")
        try:
            if not self._answered:
                raise TimeoutError
            async with asyncio.timeout(self.timeout):
                await self._ready.wait()
        except TimeoutError:
            log.warning("the broker's dynamic security at %r does not answer; its set-up waits for it, "
                        "and device accounts cannot be changed until then", self.target)
            self._setup = asyncio.create_task(self._set_up_when_ready(), name="fleet-dynsec-setup")
            return self
        await self._setup_fleet_role()
        await self._pin_existing_devices()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_tasks([self._setup])
        await self._stop()

    async def _stop(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def _set_up_when_ready(self) -> None:
        """The set-up of __aenter__, for a broker that came up later; retried until it works."""
        delay = float(RECONNECT_MIN_S)
        while True:
            await self._ready.wait()
            try:
                await self._setup_fleet_role()
                await self._pin_existing_devices()
            except AccountsError as err:
                log.error("dynamic-security set-up failed (%s); trying again in %.0f s", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            log.info("dynamic-security set-up done at %r", self.target)
            return

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode,
                    properties: object) -> None:
        if reason.is_failure:
            self._refused = str(reason)
        else:
            self._answered = True
            client.subscribe(CONTROL + "/response", qos=1)
        self._first_contact.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self._first_contact.set()

    def _on_disconnect(self, *args: object) -> None:
        self._loop.call_soon_threadsafe(self._ready.clear)

    def _on_subscribe(self, *args: object) -> None:
        self._loop.call_soon_threadsafe(self._ready.set)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(msg.payload).get("responses", [])
        except ValueError:
            return
        self._loop.call_soon_threadsafe(self._deliver, responses)

    def _deliver(self, responses: list[dict[str, Any]]) -> None:
        for response in responses:
            future = self._pending.pop(str(response.get("correlationData")), None)
            if future is not None and not future.done():
                future.set_result(response)

    async def call(self, command: str, **fields: Any) -> dict[str, Any]:
        """One dynamic-security command; returns its response (with `error` when it failed)."""
        if not self._ready.is_set():  # reconnecting (a change of our own role makes the broker drop us)
            try:
                async with asyncio.timeout(self.timeout):
                    await self._ready.wait()
            except TimeoutError:  # never queued: it would happen later, after the API said it failed
                raise AccountsError(f"the broker's dynamic security at {self.target!r} is not reachable") from None
        correlation = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending[correlation] = future
        body = {"commands": [{"command": command, "correlationData": correlation, **fields}]}
        self._client.publish(CONTROL, json.dumps(body), qos=1)
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError as err:
            self._pending.pop(correlation, None)
            raise AccountsError(f"the broker did not answer {command} within {self.timeout}s") from err

    async def _must(self, command: str, tolerated: tuple[str, ...] = (), **fields: Any) -> None:
        response = await self.call(command, **fields)
        error = response.get("error")
        if error and not any(t in error for t in tolerated):
            raise AccountsError(f"broker refused {command}: {error}")

    def _reserved(self, device_id: str) -> bool:
        return reserved_for_fleet(device_id, fleet_username=self.username, fleet_client_id=self.fleet_client_id)

    async def _pin_existing_devices(self) -> None:
        """Device clients made before client ids were pinned get theirs now (the broker
        disconnects each once; it reconnects with its device id, as every device does)."""
        response = await self.call("listClients", verbose=True, count=-1, offset=0)
        if response.get("error"):
            raise AccountsError(f"broker refused listClients: {response['error']}")
        for client in response.get("data", {}).get("clients", []):
            username = client.get("username")
            roles = {r.get("rolename") for r in client.get("roles", [])}
            if (isinstance(username, str) and device_role(username) in roles and client.get("clientid") != username
                    and not self._reserved(username)):
                await self._must("modifyClient", username=username, clientid=username)
                log.info("broker account for %s pinned to its client id", username)

    async def _setup_fleet_role(self) -> None:
        await self._must("setDefaultACLAccess", acls=DEFAULT_ACCESS)
        await self._must("createRole", ("already exists",), rolename=FLEET_ROLE,
                         acls=_acls(fleet_rules(), FLEET_ACL_TYPES))
        if FLEET_ROLE in await self._roles_of(self.username):
            return
        # Changing our own account's roles makes the broker disconnect us (paho reconnects), so
        # the answer may be lost or be an error; what counts is the role being there afterwards.
        try:
            await self.call("addClientRole", username=self.username, rolename=FLEET_ROLE)
        except AccountsError:
            pass
        for _ in range(3):
            try:
                if FLEET_ROLE in await self._roles_of(self.username):
                    return
            except AccountsError:
                continue
        raise AccountsError(f"could not give the fleet's account the {FLEET_ROLE!r} role")

    async def _roles_of(self, username: str) -> set[str]:
        response = await self.call("getClient", username=username)
        if response.get("error"):
            raise AccountsError(f"broker refused getClient: {response['error']}")
        return {r["rolename"] for r in response.get("data", {}).get("client", {}).get("roles", [])}

    async def set_device_password(self, device_id: str, password: str) -> None:
        # a device named like the fleet's account would replace it below (deleteClient)
        refuse_reserved(device_id, fleet_username=self.username, fleet_client_id=self.fleet_client_id)
        role = device_role(device_id)
        await self._must("createRole", ("already exists",), rolename=role,
                         acls=_acls(device_rules(device_id), ACL_TYPES))
        # delete first: the broker then disconnects whoever is connected with the old password
        await self._must("deleteClient", ("not found",), username=device_id)
        await self._must("createClient", username=device_id, password=password, clientid=device_id,
                         roles=[{"rolename": role}], textdescription="IOC device")
        log.info("broker account for %s set", device_id)

    async def remove_device(self, device_id: str) -> None:
        if self._reserved(device_id):
            return  # never a device account: deleting it would delete the fleet's own
        await self._must("deleteClient", ("not found",), username=device_id)
        await self._must("deleteRole", ("not found",), rolename=device_role(device_id))
        log.info("broker account for %s removed", device_id)
