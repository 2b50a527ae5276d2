"""The embedded MQTT broker (amqtt): only for the zero-setup demo, when FLEET_MQTT_URL is unset.

Production and the tests use Mosquitto. The embedded broker listens on loopback only.

Every TCP connection passes a gate before amqtt sees it (`_CheckedBroker.stream_connected`):
the connection cap and the per-address rate limit, then a CONNECT within the connect timeout,
then the login (password checked off the event loop). Only then does amqtt look up or take over
a session, so a refused client cannot disturb anyone else's. See docs/identity.md.
"""

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from amqtt.adapters import ReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from contract.topics import is_valid_device_id
from fleet.broker_auth.accounts import refuse_reserved
from fleet.broker_auth.admission import Admission, LogThrottle, Refusal
from fleet.broker_auth.embedded import FLEET_USER, EmbeddedAuthority, Login, LoginAttempt
from fleet.broker_auth.limits import DEVICE_PAYLOAD_MAX, PACKET_OVERHEAD
from fleet.broker_auth.wire import (
    BAD_PROTOCOL,
    MQTT_311,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    LimitedReader,
    WireError,
    connack,
    parse_connect,
    read_connect,
)

log = logging.getLogger(__name__)

# a CONNECT carries at most a device's will (one upstream message) besides names and password
CONNECT_MAX = DEVICE_PAYLOAD_MAX + PACKET_OVERHEAD


class BrokerError(RuntimeError):
    """The embedded broker could not start (most often: its port is taken)."""


class _SnapshotDict(dict):  # type: ignore[type-arg]
    """A dict whose items() is a copy: amqtt 0.12 awaits while iterating its subscriptions, and a
    client subscribing meanwhile made the broadcast fail ('dictionary changed size') and lose the
    message."""

    def items(self):  # type: ignore[no-untyped-def]
        return list(super().items())


class _CheckedBroker(Broker):
    """amqtt, behind the fleet's gate, with retained messages going only where the topic rules allow.

    amqtt 0.12, when a client connects, replays retained messages for every subscription held by
    any client, to the new client, without its topic checks: device A would receive B's retained
    birth. Here a retained message goes only to a session that holds the subscription itself and
    that may receive the topic.
    """

    url: str

    def __init__(self, config: dict[str, object], authority: EmbeddedAuthority) -> None:
        super().__init__(config)
        self._subscriptions = _SnapshotDict(self._subscriptions)  # type: ignore[has-type]
        self.authority = authority
        self.admission = Admission(authority.bounds)
        self._refusals = LogThrottle(log)

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "unknown"
        refusal = self.admission.open(address)
        if refusal is not None:
            if refusal is Refusal.CAP:
                self._refusals.warning("cap", "embedded broker: %d connections open, the cap "
                                       "(FLEET_EMBEDDED_BROKER_MAX_CONNECTIONS): closing new connections "
                                       "at once", self.admission.open_count)
            else:
                self._refusals.warning("rate", "embedded broker: closing connections from %s: %s "
                                       "(FLEET_EMBEDDED_BROKER_CONNECTS_PER_S)", address, refusal.value)
            writer.transport.abort()
            return
        try:
            await self._gate(reader, writer, listener_name, address)
        except Exception:  # one client must never take the listener down
            log.exception("embedded broker: a connection from %s failed", address)
            writer.transport.abort()
        finally:
            self.admission.close()

    async def _gate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str,
                    address: str) -> None:
        try:
            async with asyncio.timeout(self.authority.bounds.connect_timeout_s):
                raw = await read_connect(reader, CONNECT_MAX)
            connect = await parse_connect(raw)
        except TimeoutError:
            self._refusals.warning("timeout", "embedded broker: closed a connection from %s that sent no "
                                   "CONNECT within %.1f s", address, self.authority.bounds.connect_timeout_s)
            writer.transport.abort()
            return
        except (WireError, asyncio.IncompleteReadError, ConnectionError) as err:
            self._refusals.warning("malformed", "embedded broker: closed a connection from %s: %s",
                                   address, err if isinstance(err, WireError) else "closed before CONNECT")
            writer.transport.abort()
            return
        if connect.protocol_level != MQTT_311:  # amqtt speaks 3.1.1 only
            await self._answer(writer, BAD_PROTOCOL)
            return
        login = await self.authority.login(LoginAttempt(connect.username, connect.password, connect.client_id,
                                                        connect.will_topic, connect.will_payload))
        if login is not Login.OK:
            self._refusals.warning(login.value, "embedded broker: %s a login from %s as %s", login.value,
                                   address, self._shown(connect.username))
            await self._answer(writer, SERVER_UNAVAILABLE if login is Login.BUSY else NOT_AUTHORIZED)
            return
        assert connect.username is not None
        limited = LimitedReader(reader, raw, payload_max=self.authority.payload_limit(connect.username),
                                who=connect.username)
        await self._client_connected(listener_name, limited, StreamWriterAdapter(writer))

    def _shown(self, username: str | None) -> str:
        """A user name fit for the log: a device id or the fleet's, never arbitrary input."""
        if username and (username == FLEET_USER or is_valid_device_id(username)):
            return repr(username)
        return "an invalid user name" if username else "nobody (anonymous)"

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, code: int) -> None:
        writer.write(connack(code))
        try:
            async with asyncio.timeout(2):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    async def _initialize_client_session(self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str,
                                         remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        """amqtt 0.12 reads with a timeout of the client's keepalive and then does nothing
        (`BrokerProtocolHandler.handle_read_timeout` is a no-op): a client that goes silent with its
        socket open is never dropped and its will never sent. Here, as MQTT 3.1.1 §3.1.2.10 says,
        a client silent for 1.5 × its keepalive is disconnected: its will goes out."""
        handler, session = await super()._initialize_client_session(reader, writer, remote_address, remote_port)
        if session.keep_alive > 0:
            session.keep_alive = math.ceil(session.keep_alive * 1.5)
            handler.handle_read_timeout = partial(_drop_silent, handler, writer)
        return handler, session

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


def _drop_silent(handler: BrokerProtocolHandler, writer: WriterAdapter) -> None:
    """The read timed out (1.5 × keepalive of silence): close the socket, so the reader sees the
    end of the stream and amqtt handles the disconnect as abnormal (the will is published)."""
    session = handler.session
    log.info("embedded broker: %s silent for %s s (1.5 x its keepalive): disconnected, its will sent",
             session.client_id if session else "a client", session.keep_alive if session else "?")
    transport = getattr(getattr(writer, "_writer", None), "transport", None)
    if transport is not None:
        transport.abort()


class EmbeddedAccounts:
    """Broker accounts on the embedded broker: logins are checked against the credential table
    as they happen, so a change needs no push; what is left is to forget remembered logins and
    disconnect whoever is logged in with credentials that were just replaced or revoked."""

    def __init__(self, broker: "_CheckedBroker") -> None:
        self._broker = broker

    async def set_device_password(self, device_id: str, password: str) -> None:
        authority = self._broker.authority
        refuse_reserved(device_id, fleet_username=FLEET_USER, fleet_client_id=authority.fleet_client_id)
        authority.forget(device_id)
        await self._broker.disconnect_user(device_id)

    async def remove_device(self, device_id: str) -> None:
        if self._broker.authority.reserved(device_id):
            return  # never a device account: nothing to remove, and the fleet's own must stay
        self._broker.authority.forget(device_id)
        await self._broker.disconnect_user(device_id)


@asynccontextmanager
async def embedded_broker(host: str, port: int, authority: EmbeddedAuthority) -> AsyncIterator["_CheckedBroker"]:
    """Run an amqtt broker for the duration of the block; its `url` carries no password."""
    config = {
        # no amqtt max_connections: its semaphore makes extra sockets wait; the gate closes them
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "fleet.broker_auth.embedded.FleetAuthPlugin": {"authority": authority},
            "fleet.broker_auth.embedded.FleetTopicPlugin": {"authority": authority},
        },
    }
    broker = _CheckedBroker(config, authority)
    try:
        await broker.start()
    except Exception as err:  # amqtt wraps the OSError of a taken port in its own errors
        authority.close()
        raise BrokerError(f"the embedded MQTT broker cannot listen on {host}:{port} ({err}); "
                          "set FLEET_EMBEDDED_BROKER_PORT or FLEET_MQTT_URL") from err
    broker.url = f"mqtt://{host}:{port}"
    log.info("embedded MQTT broker listening on %s", broker.url)
    try:
        yield broker
    finally:
        await broker.shutdown()
        authority.close()

