"""The outbound MQTT endpoint: relayed events published on the IOC's own broker (docs/relay.md,
"MQTT endpoints").

One MQTT 5 connection per endpoint (paho-mqtt, its network thread per connection, bridged to
asyncio like fleet/ingest/link.py: aiomqtt does not tell a PUBACK's reason code, and a refusal
such as 0x87 Not authorized must fail the delivery). Clean start and no session: the outbox is
the durable part, a message is delivered only after its PUBACK.

Connections are made lazily by a send and never in the background: a lost or refused connection
stays down until the next send, which makes one attempt (shared by the sends that arrive while it
runs). After a failed attempt, sends within CONNECT_HOLDOFF_S get the same failure without
another attempt, so a thousand device queues waking at once cost the IOC broker one connect,
not a thousand; beyond that the delivery worker's backoff is the pacing.
"""

import asyncio
import contextlib
import hashlib
import logging
import ssl
import string
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleet.relay.models import RelayEndpoint
from fleet.relay.transport import Message, Outcome

log = logging.getLogger(__name__)

KEEPALIVE_S = 60  # the IOC broker drops a connection silent for 1.5x this; paho pings before
CONNECT_HOLDOFF_S = 1.0  # after a failed connect, sends within this get its failure, no new attempt
MAX_INFLIGHT = 100  # QoS 1 messages paho keeps unacknowledged on one connection (the worker sends fewer)
MAX_QUEUED = 1000  # paho's own queue beyond MAX_INFLIGHT; at the bound a send fails at once
TOPIC_FIELDS = ("device", "type", "phase", "category", "ward")
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
CONTENT_TYPE = "application/json"
CLIENT_ID_PREFIX = "ioc-fleet-relay-"


class TopicError(ValueError):
    """An endpoint's topic template that cannot make a topic to publish on."""


def _safe_level(value: str) -> str:
    """A value as one topic level: '_' when it is empty or would add a level or a wildcard."""
    if not value or any(c in value for c in "/+#\0"):
        return "_"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no broker takes it
        return "_"
    return value


def render_topic(template: str, message: Message) -> str:
    """The topic for one message: `template`'s placeholders ({device}, {type}, {phase},
    {category}, {ward}) replaced by the message's values, each made one safe level."""
    values = {name: _safe_level(getattr(message, name)) for name in TOPIC_FIELDS}
    parts: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise TopicError(f"topic template is not valid ({err})") from None
    for literal, name, spec, conversion in parsed:
        parts.append(literal)
        if name is None:
            continue
        if name not in values or spec or conversion:
            raise TopicError(f"topic template has an unknown placeholder (known: {', '.join(TOPIC_FIELDS)})")
        parts.append(values[name])
    topic = "".join(parts)
    if not topic or "+" in topic or "#" in topic or "\0" in topic or topic.startswith("$"):
        raise TopicError("topic template makes an empty topic, a wildcard or a $ topic")
    if len(topic.encode("utf-8", "surrogatepass")) > 65535:
        raise TopicError("topic is longer than MQTT allows")
    return topic


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    """Where and as whom one endpoint connects, parsed from its row."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    ca_pem: str | None
    client_id: str

    @classmethod
    def of(cls, endpoint: RelayEndpoint) -> "BrokerTarget":
        url = urlsplit(endpoint.url)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise ValueError("an MQTT endpoint's url is mqtt://host:port or mqtts://host:port")
        try:
            port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        except ValueError:
            raise ValueError("the endpoint's url has an invalid port") from None
        return cls(host=url.hostname, port=port, tls=url.scheme == "mqtts", username=endpoint.username or None,
                   password=endpoint.password or None, ca_pem=endpoint.ca_pem or None,
                   client_id=f"{CLIENT_ID_PREFIX}{endpoint.id}")

    @property
    def fingerprint(self) -> str:
        """Changes when anything the connection was made with changes (a hash: no secret kept twice)."""
        parts = (self.host, str(self.port), str(self.tls), self.username or "", self.password or "",
                 self.ca_pem or "", self.client_id)
        return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()

    def __repr__(self) -> str:  # no password in logs or tracebacks
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _failure(error: str, status: int | None = None) -> Outcome:
    return Outcome(ok=False, status=status, error=error[:300])


def _describe(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was refused ({err.verify_message})"
    if isinstance(err, ssl.SSLError):
        return f"TLS: {err.reason or err}"
    if isinstance(err, TimeoutError | OSError) and not str(err):
        return type(err).__name__
    return f"{type(err).__name__}: {err}"


class _Connection:
    """One MQTT 5 connection; paho's network thread runs while it is up and ends with it."""

    def __init__(self, target: BrokerTarget) -> None:
        self.target = target
        self._loop = asyncio.get_running_loop()
        self.alive = False
        self._connack: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[ReasonCode]] = {}
        self._lost_reason: str | None = None
        self._closed = False
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=target.client_id, protocol=mqtt.MQTTv5,
                             reconnect_on_failure=False)
        if target.username is not None:
            client.username_pw_set(target.username, target.password)
        if target.tls:
            # the system's CAs unless the endpoint names its own; the host name is checked either way
            client.tls_set_context(ssl.create_default_context(cadata=target.ca_pem) if target.ca_pem
                                   else ssl.create_default_context())
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    async def open(self, timeout_s: float) -> Outcome | None:
        """Connect once; None when the broker accepted, else the failure."""
        self._client.connect_timeout = timeout_s  # covers the TCP connect and the TLS handshake
        deadline = self._loop.time() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.to_thread(self._client.connect, self.target.host, self.target.port,
                                        keepalive=KEEPALIVE_S, clean_start=True)
        except (OSError, TimeoutError, ValueError) as err:  # ssl errors are OSErrors; a bad host a ValueError
            await self.close()
            return _failure(f"cannot connect to {self.target!r}: {_describe(err)}")
        self._client.loop_start()
        try:
            async with asyncio.timeout(max(0.0, deadline - self._loop.time())):
                reason = await asyncio.shield(self._connack)
        except TimeoutError:
            await self.close()
            return _failure(f"no CONNACK from {self.target!r} within {timeout_s:g} s")
        if reason.is_failure:
            await self.close()
            return _failure(f"{self.target!r} refused the connection: {reason}", reason.value)
        return None

    async def publish(self, topic: str, message: Message, deadline: float) -> Outcome:
        if not self.alive:
            return _failure(f"not connected to {self.target!r}: {self._lost_reason or 'closed'}")
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = CONTENT_TYPE
        properties.PayloadFormatIndicator = 1  # UTF-8: the payload is JSON
        properties.UserProperty = [(name, message.headers[name]) for name in SIGNATURE_HEADERS
                                   if name in message.headers]
        info = self._client.publish(topic, message.body, qos=1, retain=False, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return _failure(f"publish to {self.target!r} failed: {mqtt.error_string(info.rc)}")
        # the PUBACK reaches us through call_soon_threadsafe, so after this line: no race
        future = self._pending[info.mid] = self._loop.create_future()
        try:
            async with asyncio.timeout(max(0.0, deadline - self._loop.time())):
                reason = await future
        except TimeoutError:
            # a broker that stops acknowledging is treated as lost: the next send connects again
            self._pending.pop(info.mid, None)
            self._lost("no PUBACK in time")
            return _failure(f"no PUBACK from {self.target!r} in time")
        except ConnectionError as err:
            return _failure(f"connection to {self.target!r} lost before the PUBACK ({err})")
        if reason.is_failure:
            return _failure(f"{self.target!r} refused the message: {reason}", reason.value)
        return Outcome(ok=True, status=reason.value)

    async def close(self) -> None:
        """Disconnect (a DISCONNECT packet when connected) and end paho's thread; idempotent."""
        self._lost("closed")
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        with contextlib.suppress(Exception):  # a connect that failed before the loop started
            sock = self._client.socket()
            if sock is not None:
                sock.close()

    def _lost(self, reason: str) -> None:
        """The connection is over (asyncio side): every send waiting for a PUBACK fails now."""
        if self._lost_reason is None:
            self._lost_reason = reason
        self.alive = False
        if not self._connack.done():
            self._connack.set_exception(ConnectionError(reason))
            self._connack.exception()  # retrieved: nobody may be waiting any more
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionError(reason))

    def _connected(self, reason: ReasonCode) -> None:
        if not reason.is_failure and self._lost_reason is None:
            self.alive = True
        if not self._connack.done():
            self._connack.set_result(reason)

    def _acked(self, mid: int, reason: ReasonCode) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reason)

    def _post(self, callback: object, *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: shutting down
            self._loop.call_soon_threadsafe(callback, *args)  # type: ignore[arg-type]

    # paho's network thread: nothing may raise here
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode,
                    properties: object) -> None:
        self._post(self._connected, reason)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode,
                       properties: object) -> None:
        self._post(self._lost, f"disconnected: {reason}")

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode,
                    properties: object) -> None:
        self._post(self._acked, mid, reason)


@dataclass
class _Slot:
    """One endpoint's connection, the attempt under way and the last failed attempt."""

    fingerprint: str = ""
    connection: _Connection | None = None
    attempt: "asyncio.Task[_Connection | Outcome] | None" = None
    failure: Outcome | None = None
    failed_at: float = 0.0


class MqttTransport:
    """The Transport (fleet/relay/transport.py) for `kind = mqtt` endpoints: one connection per
    endpoint id, made again when the endpoint's url, credentials or CA change."""

    def __init__(self, *, connect_holdoff_s: float = CONNECT_HOLDOFF_S) -> None:
        self.connect_holdoff_s = connect_holdoff_s
        self.connect_attempts = 0  # in all, for tests and /metrics
        self._slots: dict[int, _Slot] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def send(self, endpoint: RelayEndpoint, message: Message) -> Outcome:
        """Publish one message (QoS 1) and wait for its PUBACK, `endpoint.timeout_s` in all
        (connecting included). Never raises for a broker's or a network's failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + endpoint.timeout_s
        try:
            topic = render_topic(endpoint.topic, message)
            target = BrokerTarget.of(endpoint)
        except ValueError as err:
            return _failure(str(err))
        connection = await self._connection(endpoint.id, target, endpoint.timeout_s, deadline)
        if isinstance(connection, Outcome):
            return connection
        return await connection.publish(topic, message, deadline)

    async def forget(self, endpoint_id: int) -> None:
        """Close an endpoint's connection (deleted or disabled endpoint)."""
        slot = self._slots.pop(endpoint_id, None)
        if slot is not None:
            await self._close_slot(slot)

    async def close(self) -> None:
        """Disconnect every endpoint cleanly."""
        slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            await self._close_slot(slot)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _close_slot(self, slot: _Slot) -> None:
        if slot.attempt is not None:
            slot.attempt.cancel()
            with contextlib.suppress(BaseException):
                await slot.attempt
        if slot.connection is not None:
            await slot.connection.close()
        slot.connection = None

    def _retire(self, connection: _Connection) -> None:
        task = asyncio.create_task(connection.close(), name=f"relay-mqtt-close-{connection.target.client_id}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _connection(self, endpoint_id: int, target: BrokerTarget, timeout_s: float,
                          deadline: float) -> "_Connection | Outcome":
        loop = asyncio.get_running_loop()
        slot = self._slots.setdefault(endpoint_id, _Slot())
        fingerprint = target.fingerprint
        if slot.fingerprint != fingerprint:  # first use, or the url/credentials/CA changed
            if slot.connection is not None:
                self._retire(slot.connection)
            if slot.attempt is not None:
                slot.attempt.cancel()
            slot.fingerprint, slot.connection, slot.attempt, slot.failure = fingerprint, None, None, None
        connection = slot.connection
        if connection is not None and connection.alive:
            return connection
        if slot.attempt is None:
            if connection is not None:
                slot.connection = None
                self._retire(connection)
            if slot.failure is not None and loop.time() - slot.failed_at < self.connect_holdoff_s:
                return slot.failure
            slot.attempt = asyncio.create_task(self._connect(slot, target, timeout_s),
                                               name=f"relay-mqtt-connect-{endpoint_id}")
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                return await asyncio.shield(slot.attempt)
        except TimeoutError:
            return _failure(f"not connected to {target!r} in time")
        except asyncio.CancelledError:
            if asyncio.current_task() is not None and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            return _failure(f"the connection to {target!r} was replaced (endpoint changed)")

    async def _connect(self, slot: _Slot, target: BrokerTarget, timeout_s: float) -> "_Connection | Outcome":
        self.connect_attempts += 1
        connection = _Connection(target)
        try:
            failure = await connection.open(timeout_s)
        except asyncio.CancelledError:
            await connection.close()
            raise
        finally:
            if slot.attempt is asyncio.current_task():
                slot.attempt = None
        if failure is not None:
            if slot.fingerprint == target.fingerprint:
                slot.failure, slot.failed_at = failure, asyncio.get_running_loop().time()
            log.warning("relay: %s", failure.error)
            return failure
        if slot.fingerprint != target.fingerprint:  # changed meanwhile
            self._retire(connection)
            return _failure(f"the connection to {target!r} was replaced (endpoint changed)")
        slot.connection, slot.failure = connection, None
        log.info("relay: connected to %r as %s", target, target.client_id)
        return connection
