"""The embedded MQTT broker (amqtt): only for the zero-setup demo, when FLEET_MQTT_URL is unset.

Production and the tests use Mosquitto. The embedded broker listens on loopback only.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.session import Session

from fleet.broker_auth.embedded import EmbeddedAuthority

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not start (most often: its port is taken)."""


class _SnapshotDict(dict):  # type: ignore[type-arg]
    """A dict whose items() is a copy: amqtt 0.12 awaits while iterating its subscriptions, and a
    client subscribing meanwhile made the broadcast fail ('dictionary changed size') and lose the
    message."""

    def items(self):  # type: ignore[no-untyped-def]
        return list(super().items())


class _CheckedBroker(Broker):
    url: str

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SnapshotDict(self._subscriptions)  # type: ignore[has-type]

    """amqtt, with retained messages going only where the topic rules allow.

    amqtt 0.12, when a client connects, replays retained messages for every subscription held by
    any client, to the new client, without its topic checks: device A would receive B's retained
    birth. Here a retained message goes only to a session that holds the subscription itself and
    that may receive the topic.
    """

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        topic_filter, qos = subscription
        holders = self._subscriptions.get(topic_filter, [])
        if not any(s.client_id == session.client_id for s, _ in holders):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        sends = []
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(
                    session, topic=topic, action=Action.RECEIVE):
                sends.append(asyncio.create_task(handler.mqtt_publish(
                    retained.topic, retained.data, min(qos, retained.qos or qos), retain=True)))
        if sends:
            await asyncio.wait(sends)

    async def disconnect_user(self, username: str) -> int:
        """Close every open connection logged in as `username` (its will is published)."""
        closed = 0
        for session, handler in list(self._sessions.values()):
            if session.username == username and handler is not None and handler.writer is not None:
                await handler.writer.close()
                closed += 1
        return closed


class EmbeddedAccounts:
    """Broker accounts on the embedded broker: logins are checked against the credential table
    as they happen, so a change needs no push; what is left is to disconnect whoever is logged in
    with credentials that were just replaced or revoked."""

    def __init__(self, broker: "_CheckedBroker") -> None:
        self._broker = broker

    async def set_device_password(self, device_id: str, password: str) -> None:
        await self._broker.disconnect_user(device_id)

    async def remove_device(self, device_id: str) -> None:
        await self._broker.disconnect_user(device_id)


@asynccontextmanager
async def embedded_broker(host: str, port: int, authority: EmbeddedAuthority) -> AsyncIterator["_CheckedBroker"]:
    """Run an amqtt broker for the duration of the block; its `url` carries no password."""
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 2000}},
        "plugins": {
            "fleet.broker_auth.embedded.FleetAuthPlugin": {"authority": authority},
            "fleet.broker_auth.embedded.FleetTopicPlugin": {"authority": authority},
        },
    }
    broker = _CheckedBroker(config)
    try:
        await broker.start()
    except Exception as err:  # amqtt wraps the OSError of a taken port in its own errors
        raise BrokerError(f"the embedded MQTT broker cannot listen on {host}:{port} ({err}); "
                          "set FLEET_EMBEDDED_BROKER_PORT or FLEET_MQTT_URL") from err
    broker.url = f"mqtt://{host}:{port}"
    log.info("embedded MQTT broker listening on %s", broker.url)
    try:
        yield broker
    finally:
        await broker.shutdown()
