"""The fleet's MQTT connection, on the event loop itself: its own framing (fleet/ingest/mqtt_wire.py),
no client library thread.

Why not paho-mqtt (used here before) or aiomqtt (built on paho): paho's network thread decoded each
message into objects and handed it over to the loop one by one, and that thread was about half of
a draining fleet's CPU (docs/fleet.md, "Ingest throughput"). Here a read of the socket is split
into packets in one pass on the loop, and a PUBLISH becomes one RawMessage.

Backpressure: the queue is bounded (`queue_max`). When it is full the link stops parsing and
stops reading the socket (the transport's pause_reading), and the broker holds further messages
for the fleet's persistent session (up to the broker's own `max_queued_messages`).

Acknowledgements are manual: a message is acknowledged to the broker only when the ingest says
it is final, i.e. stored by a committed transaction or refused and recorded (`MqttLink.ack`, one
write for the whole batch's PUBACKs). Until then the broker keeps it for the fleet's session and
sends it again after a reconnect, so a crash of the fleet loses nothing. How many unacknowledged
messages the broker sends at once is the window: over MQTT 5, the Receive Maximum the link asks
for (`receive_max`); over 3.1.1 the broker's own setting (docs/fleet.md, "Acknowledgement after
commit").

A broker that is down does not stop the fleet: the link starts anyway and keeps trying, 1 s
after a failure, doubling to 30 s (RECONNECT_MIN_S, RECONNECT_MAX_S), for as long as it takes;
/healthz and the status page say so meanwhile. Only a broker that answers and refuses the fleet
(bad credentials, a client id it may not use) stops the start: that is a configuration error,
not an outage. A refusal later (the broker's accounts changed under a running fleet) is logged
and retried like an outage.
"""

import asyncio
import collections
import contextlib
import logging
import os
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from contract import PROBE_TOPIC, fleet_subscription
from fleet.ingest import mqtt_wire as wire
from fleet.settings import MqttTarget
from fleet.tasks import stop_tasks

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1  # the link waits this long after a failed attempt or a lost connection, doubling
RECONNECT_MAX_S = 30  # ... up to this
CONNECT_TIMEOUT_S = 10.0  # TCP connect, TLS handshake and the CONNACK, each
FIRST_CONTACT_S = 15.0  # the start waits this long for a broker that answers slowly, then goes on
PROBE_MISSES = 6  # probes that may fail to come back before the fleet counts as not hearing
KEEPALIVE_S = 30  # a PINGREQ every half of it; nothing from the broker for 1.5 times it: the link is dead
DISCONNECT_WAIT_S = 5.0  # close() waits this long for the broker to take the last acks and the DISCONNECT
OUTGOING_INFLIGHT_MAX = 100  # the fleet's own QoS 1 publishes unacknowledged at once (or the broker's
# Receive Maximum if lower); a publish waits for a slot within its timeout
PACKET_MAX = 1 << 20  # a packet from the broker larger than this drops the connection (devices are
# held to far less by the broker's limits: fleet/broker_auth/limits.py)


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    payload: bytes
    retain: bool
    mid: int = 0  # the broker's packet id, for the acknowledgement (QoS 0: none is sent)
    qos: int = 0
    connection: int = 0  # which of the link's connections it came on (an ack goes on that one only)


class LinkError(RuntimeError):
    """The broker could not be reached or refused the fleet."""


class _Refused(Exception):
    """The broker answered the CONNECT with a refusal."""


@dataclass(frozen=True, slots=True)
class LinkState:
    """What the link can tell about itself, for /healthz (times are `time.monotonic()`)."""

    connected: bool
    subscribed: bool  # the broker granted the subscription on the current connection
    refused: str | None  # why the broker refused the connection or the subscription, if it did
    probe_age_s: float | None  # since the last probe came back (None: none yet on this connection)
    connected_for_s: float | None
    # how long the fleet has heard the broker without a break: connected, subscribed, and its
    # probe came back within the probe window (None: it does not hear it now); fleet/liveness.py
    listening_for_s: float | None = None
    unreachable_for_s: float | None = None  # since the broker stopped answering (None: it answers)
    connect_failures: int = 0  # failed connection attempts since it last answered
    connect_error: str | None = None  # why the last attempt failed (a socket or TLS error)


def _describe(err: BaseException) -> str:
    """One line for /healthz: a socket error by its errno's own words ("[Errno 111] Connection
    refused", not asyncio's "Connect call failed (…)")."""
    if isinstance(err, OSError) and not isinstance(err, ssl.SSLError) and err.errno:
        return f"{type(err).__name__}: [Errno {err.errno}] {os.strerror(err.errno)}"[:200]
    return f"{type(err).__name__}: {err}"[:200]


class _Window:
    """The fleet's outgoing in-flight window on one connection: QoS 1 publishes not yet acknowledged."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._freed = asyncio.Event()

    def take(self) -> None:
        self.free -= 1

    def give(self) -> None:
        self.free += 1
        self._freed.set()

    async def wait(self) -> None:
        while self.free <= 0:
            self._freed.clear()
            await self._freed.wait()


class _Protocol(asyncio.Protocol):
    """One TCP (or TLS) connection; everything it hears goes to the link."""

    def __init__(self, link: "MqttLink") -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.link._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self.link._lost(self, exc)


class MqttLink:
    """Subscribes to everything devices send and publishes commands and desired state.

    It also sends itself a probe every `probe_s` seconds on PROBE_TOPIC, inside its own
    subscription: a probe that comes back proves the broker still delivers to the fleet, which
    neither the socket nor a SUBACK can (a broker can drop a session's subscriptions and keep
    the socket open).
    """

    def __init__(self, target: MqttTarget, *, client_id: str, queue_max: int,
                 shared_group: str | None = None, ca_file: str | None = None, probe_s: float = 5.0,
                 protocol: str = "5", session_expiry_s: int = 7 * 86_400, receive_max: int = 10_000,
                 other_hosts: Sequence[tuple[str, int]] = ()) -> None:
        self.target = target
        # where to connect: the URL's host, then a clustered broker's other nodes, one per attempt
        self._addresses = [(target.host, target.port), *other_hosts]
        self._address = 0  # index of the next attempt's address; moves on after a failure or a loss
        self.client_id = client_id
        self.queue_max = queue_max
        self.protocol = protocol
        self._level = wire.LEVEL[protocol]
        self.session_expiry_s = session_expiry_s
        self.receive_max = receive_max
        self.probe_s = probe_s
        self.probe_window_s = round(PROBE_MISSES * probe_s, 1)
        self._ssl = ssl.create_default_context(cafile=ca_file) if target.tls else None
        # received messages waiting for take(): at most queue_max (at the bound the socket is not read)
        self._items: collections.deque[RawMessage] = collections.deque()
        self._ready = asyncio.Event()
        self._paused = False  # the queue was full: parsing and reading stopped until take() makes room
        self.connected = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._subscription = fleet_subscription()
        if shared_group:
            self._subscription = f"$share/{shared_group}/{self._subscription}"
        self._subscriptions = [self._subscription]
        if shared_group:  # a shared subscription may hand our probe to another instance
            self._subscriptions.append(PROBE_TOPIC)
        self._closing = False
        self.refused: str | None = None
        self._proto: _Protocol | None = None  # the current connection (None between connections)
        self._decoder = wire.Decoder(PACKET_MAX)
        self._connack: asyncio.Future[wire.Connack] | None = None
        self._packet_id = 0
        self._subscribe_mid: int | None = None
        self._subscribed = False
        self._subscribe_delay: float = RECONNECT_MIN_S  # before asking again for a refused subscription
        # the fleet's own publishes awaiting their PUBACK: packet id -> future (None: nobody waits)
        self._pending: dict[int, asyncio.Future[None] | None] = {}
        self._slots: _Window | None = None  # outgoing in-flight window of the current connection
        self._connected_at: float | None = None
        self._heard_at = 0.0  # the last bytes from the broker (monotonic)
        self._probe_back_at: float | None = None
        self._hearing_since: float | None = None
        self._unreachable_since: float | None = None
        self._connect_failures = 0
        self._connect_error: str | None = None
        self._first_contact = asyncio.Event()  # the first attempt answered, failed or was refused
        self._probe_nonce = uuid.uuid4().hex.encode()
        self._probes_sent = 0
        self._tasks: list[asyncio.Task[None]] = []
        # acknowledgements: each connection has a number; a message is acknowledged on the
        # connection it came on only (after a reconnect the broker sends it again, under a packet
        # id it may by then have given to another message)
        self._receiving = True
        self._connection = 0
        self.acked = 0  # messages acknowledged to the broker
        self.ack_skipped = 0  # final on a connection that had ended: the broker sends them again
        self._session_known = False  # the broker has held the fleet's session before (a later CONNACK must say so)

    async def __aenter__(self) -> "MqttLink":
        """Start the link. A broker that answers is connected to before this returns (so nothing
        a device sends right after the start is missed); one that does not is retried in the
        background. Raises LinkError only when the broker answers and refuses the fleet."""
        self._tasks.append(asyncio.create_task(self._run(), name="fleet-mqtt-link"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_CONTACT_S):
                await self._first_contact.wait()
        if self.connected.is_set():
            pass
        elif self.refused is not None:
            await self.close()
            raise LinkError(f"the MQTT broker at {self.target!r} refused the fleet: {self.refused}")
        else:
            log.warning("the fleet starts without the MQTT broker at %r and keeps trying (after %d s at first, "
                        "doubling to every %d s)", self.target, RECONNECT_MIN_S, RECONNECT_MAX_S)
        self._tasks.append(asyncio.create_task(self._probe_loop(), name="fleet-mqtt-probe"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stop_receiving(self) -> None:
        """Queue nothing more (idempotent): a message arriving from now on is left unacknowledged,
        for the broker to send again on the next start. The connection stays, so the ingest can
        drain the queue and acknowledge what it stores."""
        self._receiving = False
        if self._paused:
            self._resume()

    async def close(self) -> None:
        """Disconnect (idempotent). What is still queued is never acknowledged: the broker sends it
        again on the next connection."""
        if self._closing:
            return
        self._receiving = False
        self._closing = True
        proto = self._proto
        if self._paused:
            self._resume()
        if self.connected.is_set() and proto is not None:
            # The broker handles a connection's packets in order: once it has answered a publish
            # sent after the last acks, it has taken them. Closing without that loses them when
            # the socket still holds unread data from the broker: the close then resets the
            # connection, and the broker's kernel drops what it had not yet read (measured).
            with contextlib.suppress(LinkError):
                await self.publish(PROBE_TOPIC, self._probe_nonce + b" closing", timeout=DISCONNECT_WAIT_S)
            if proto.transport is not None and not proto.transport.is_closing():
                proto.transport.write(wire.DISCONNECT)
                proto.transport.close()  # after what it holds is written
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DISCONNECT_WAIT_S):
                    await proto.lost.wait()
        await stop_tasks(self._tasks)
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.abort()

    # the connection ----------------------------------------------------------------------------
    async def _run(self) -> None:
        """Connect, and connect again whenever the connection ends, until close()."""
        delay: float = RECONNECT_MIN_S
        while not self._closing:
            try:
                proto = await self._connect()
            except _Refused as err:
                self.refused = str(err)
                log.error("broker refused the fleet: %s", err)
                self._first_contact.set()
            except (OSError, TimeoutError, EOFError, wire.WireError) as err:  # TLS errors are OSErrors
                self._connect_error = _describe(err)
                if self._unreachable_since is None:
                    self._unreachable_since = time.monotonic()
                    log.warning("cannot reach the MQTT broker at %s:%d (%s); retrying", *self._addresses[self._address],
                                self._connect_error)
                self._connect_failures += 1
                self._first_contact.set()
            else:
                delay = RECONNECT_MIN_S
                pinging = asyncio.create_task(self._keepalive(proto), name="fleet-mqtt-keepalive")
                try:
                    await proto.lost.wait()
                finally:
                    pinging.cancel()
            if self._closing:
                return
            self._address = (self._address + 1) % len(self._addresses)  # a cluster's next node, if any
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _connect(self) -> _Protocol:
        """One attempt: socket, TLS, CONNECT, CONNACK, SUBSCRIBE sent. Returns the connection."""
        target = self.target
        host, port = self._addresses[self._address]
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, proto = await self._loop.create_connection(
                lambda: _Protocol(self), host, port, ssl=self._ssl,
                server_hostname=host if self._ssl is not None else None)
        assert proto.transport is not None
        self._decoder = wire.Decoder(PACKET_MAX)
        self._connack = self._loop.create_future()
        self._proto = proto
        self._connection += 1  # now: the broker's first messages may come in the CONNACK's read
        password = target.password.get_secret_value() if target.password else None
        proto.transport.write(wire.connect(
            self.client_id, level=self._level, keepalive=KEEPALIVE_S, clean=False,
            username=target.username or None, password=password if target.username else None,
            session_expiry_s=self.session_expiry_s if self._level == 5 else 0,
            receive_max=self.receive_max if self._level == 5 else 0))
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                connack = await asyncio.shield(self._connack)
        except BaseException:
            self._proto = None
            proto.transport.abort()
            raise
        if connack.code:
            self._proto = None
            proto.transport.abort()
            why = wire.reason_text(connack.code, self._level)
            raise _Refused(f"{why}: {connack.reason}" if connack.reason else why)
        if self._unreachable_since is not None:
            log.info("the broker answers again after %d failed attempts", self._connect_failures)
        self._unreachable_since = None
        self._connect_failures = 0
        self.refused = None
        self._subscribed = False
        self._probe_back_at = None
        self._hearing_since = None
        self._connected_at = self._heard_at = time.monotonic()
        self._slots = _Window(min(OUTGOING_INFLIGHT_MAX, connack.receive_max))
        if self._session_known and not connack.session_present:
            # the broker no longer had the fleet's session (it expired, or the broker lost its
            # persistence): what it held is gone, and shows up as gaps in the devices' streams
            log.warning("the broker had no session for the fleet: messages it held for it are lost")
        self._session_known = True
        self._subscribe_delay = RECONNECT_MIN_S
        self._subscribe(proto)
        log.info("connected to %s:%d, subscribing to %s", host, port, self._subscription)
        self.connected.set()
        self._first_contact.set()
        return proto

    async def _keepalive(self, proto: _Protocol) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S / 2)
            if time.monotonic() - self._heard_at > KEEPALIVE_S * 1.5 and proto.transport is not None:
                log.warning("the broker has sent nothing for %d s; dropping the connection", KEEPALIVE_S * 1.5)
                proto.transport.abort()
                return
            if proto.transport is not None and not proto.transport.is_closing():
                proto.transport.write(wire.PINGREQ)

    def _lost(self, proto: _Protocol, exc: Exception | None) -> None:
        if proto is not self._proto:
            return
        self._proto = None
        was_connected = self.connected.is_set()
        self.connected.clear()
        self._subscribed = False
        self._connected_at = None
        self._hearing_since = None
        self._paused = False
        self._connection += 1  # acks from now on would go to the next connection: none are sent
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(EOFError("the broker closed the connection before its CONNACK"))
            self._connack.exception()  # retrieved: _connect may already have given up on it
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if future is not None and not future.done():
                future.set_exception(LinkError("the connection to the MQTT broker ended before its PUBACK"))
        if was_connected and not self._closing:
            log.warning("lost the broker (%s); reconnecting", exc or "closed by the broker")

    def _subscribe(self, proto: "_Protocol | None") -> None:
        if proto is None or proto is not self._proto or proto.transport is None or proto.transport.is_closing():
            return  # that connection is gone: the next one subscribes anew
        self._subscribe_mid = self._next_packet_id()
        proto.transport.write(wire.subscribe(self._subscribe_mid, [(t, 1) for t in self._subscriptions],
                                             level=self._level))

    def _next_packet_id(self) -> int:
        for _ in range(65_535):
            self._packet_id = self._packet_id % 65_535 + 1
            if self._packet_id not in self._pending and self._packet_id != self._subscribe_mid:
                return self._packet_id
        raise LinkError("no free packet id")

    # what the broker sends ---------------------------------------------------------------------
    def _received(self, proto: _Protocol, data: bytes) -> None:
        if proto is not self._proto:
            return
        self._heard_at = time.monotonic()
        self._decoder.feed(data)
        self._parse()

    def _parse(self) -> None:
        """Handle the whole packets received, until the queue is full (then stop reading)."""
        proto = self._proto
        if proto is None or proto.transport is None:
            return
        decoder, items, level, connection = self._decoder, self._items, self._level, self._connection
        before = len(items)
        try:
            while True:
                if self._receiving and len(items) >= self.queue_max:
                    self._paused = True
                    proto.transport.pause_reading()
                    break
                packet = decoder.next()
                if packet is None:
                    break
                first, body = packet
                if first >> 4 != wire.PUBLISH:
                    self._control(first, body)
                    continue
                qos = (first >> 1) & 3
                if qos > 1:
                    raise wire.WireError("a QoS 2 PUBLISH on a QoS 1 subscription")
                topic, mid, payload = wire.split_publish(first, body, level)
                if topic == PROBE_TOPIC:
                    self._probe_heard(payload)
                    if qos:  # final here: a probe is never stored
                        proto.transport.write(wire.puback(mid))
                    continue
                if not self._receiving:
                    continue  # stopping: left unacknowledged, the broker sends it again on the next start
                items.append(RawMessage(topic, payload, bool(first & 1), mid, qos, connection))
        except wire.WireError as err:
            log.error("the broker sent what is not MQTT (%s); dropping the connection", err)
            proto.transport.abort()
        if len(items) > before:
            self._ready.set()

    def _control(self, first: int, body: bytes) -> None:
        ack = wire.parse_ack(first, body, self._level)
        if ack.kind == wire.PUBACK:
            if ack.packet_id not in self._pending:
                return  # not ours to count (the broker acknowledged it twice)
            future = self._pending.pop(ack.packet_id)
            if self._slots is not None:
                self._slots.give()
            if future is not None and not future.done():
                code = ack.codes[0] if ack.codes else 0
                if code >= 0x80:
                    future.set_exception(LinkError(f"the broker refused the publish: {wire.reason_text(code, 5)}"))
                else:
                    future.set_result(None)
        elif ack.kind == wire.CONNACK:
            if self._connack is None or self._connack.done():
                raise wire.WireError("a CONNACK after the connection was made")
            assert ack.connack is not None
            self._connack.set_result(ack.connack)
        elif ack.kind == wire.SUBACK:
            if ack.packet_id != self._subscribe_mid:
                return
            failed = [wire.reason_text(code, self._level) for code in ack.codes if code >= 0x80]
            self._subscribed = not failed
            if failed:
                # asked again on the same connection (a NATS node refuses while its JetStream is
                # busy, e.g. right after a start); an ACL that refuses it is logged at every try
                self.refused = f"the broker refused the subscription ({', '.join(failed)})"
                log.error("%s; asking again in %d s", self.refused, self._subscribe_delay)
                self._loop.call_later(self._subscribe_delay, self._subscribe, self._proto)
                self._subscribe_delay = min(self._subscribe_delay * 2, RECONNECT_MAX_S)
            else:
                self.refused = None
                self._send_probe()  # at once: the fleet hears the broker again when it comes back
        elif ack.kind == wire.DISCONNECT_TYPE:
            code = ack.codes[0] if ack.codes else 0
            log.warning("the broker disconnects the fleet: %s", wire.reason_text(code, 5))

    def _probe_heard(self, payload: bytes) -> None:
        if payload.startswith(self._probe_nonce):  # ours, not another instance's
            now = time.monotonic()
            back_at = self._probe_back_at
            if self._hearing_since is None or back_at is None or now - back_at > self.probe_window_s:
                self._hearing_since = now  # hearing again, after a new connection or a deaf spell
            self._probe_back_at = now

    def _resume(self) -> None:
        self._paused = False
        self._parse()
        proto = self._proto
        if not self._paused and proto is not None and proto.transport is not None:
            proto.transport.resume_reading()

    # the ingest's side ---------------------------------------------------------------------------
    async def _wait_items(self, timeout: float) -> bool:
        """Whether a message is queued within `timeout` s."""
        if self._items:
            return True
        self._ready.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            pass
        return bool(self._items)

    async def take(self, max_items: int, wait_s: float, first_within: float = 0.5) -> list[RawMessage]:
        """Up to `max_items` messages: the first within `first_within` s (else none), then at most
        `wait_s` for more. Waiting takes nothing off the queue, so the timeouts are safe."""
        if not await self._wait_items(first_within):
            return []
        batch: list[RawMessage] = []
        deadline = self._loop.time() + wait_s
        items = self._items
        try:
            while True:
                while items and len(batch) < max_items:
                    batch.append(items.popleft())
                if self._paused and len(items) < self.queue_max:
                    self._resume()  # room again: parse what was held back, read the socket again
                    continue
                if len(batch) >= max_items:
                    break
                remaining = deadline - self._loop.time()
                if remaining <= 0 or not await self._wait_items(remaining):
                    break
        except asyncio.CancelledError:
            # a take cancelled while it waits for more puts back what it took, in order: the broker
            # sends a message again only on a new connection, so one dropped here would never be
            # acknowledged and would hold a slot of its window for the rest of the connection
            items.extendleft(reversed(batch))
            raise
        return batch

    def ack(self, messages: Sequence[RawMessage]) -> None:
        """Acknowledge final messages to the broker, in the order given (the order received).

        Call it only once each message is stored by a committed transaction or is final without
        a store (refused and recorded, skipped): the broker forgets an acknowledged message. One
        that came on an earlier connection is not acknowledged: the broker has sent it again on
        the current one, and that copy is acknowledged when the ingest has deduped it."""
        connection = self._connection
        proto = self._proto
        out = []
        for message in messages:
            if not message.qos:
                continue
            if message.connection != connection or proto is None:
                self.ack_skipped += 1
                continue
            out.append(wire.puback(message.mid))
        if out and proto is not None and proto.transport is not None:
            proto.transport.write(b"".join(out))
            self.acked += len(out)

    def depth(self) -> int:
        return len(self._items)

    def state(self) -> LinkState:
        now = time.monotonic()
        connected_at, back_at, hearing_since = self._connected_at, self._probe_back_at, self._hearing_since
        unreachable_since = self._unreachable_since
        connected = self.connected.is_set() and connected_at is not None
        subscribed = connected and self._subscribed
        hearing = (subscribed and hearing_since is not None and back_at is not None
                   and now - back_at <= self.probe_window_s)
        return LinkState(
            connected=connected,
            subscribed=subscribed,
            refused=self.refused,
            probe_age_s=None if back_at is None or not connected else round(now - back_at, 1),
            connected_for_s=None if connected_at is None or not connected else round(now - connected_at, 1),
            listening_for_s=round(now - hearing_since, 3) if hearing and hearing_since is not None else None,
            unreachable_for_s=None if unreachable_since is None else round(now - unreachable_since, 1),
            connect_failures=self._connect_failures,
            connect_error=self._connect_error if unreachable_since is not None else None,
        )

    # the fleet's publishes -----------------------------------------------------------------------
    def _send_probe(self) -> None:
        """QoS 1: it queues behind what the broker holds for the fleet, like a device's message. Not
        sent when the outgoing window is full (it then counts as a probe that did not come back)."""
        if self._slots is None or self._slots.free <= 0:
            return
        self._probes_sent += 1
        self._write_publish(PROBE_TOPIC, self._probe_nonce + b" %d" % self._probes_sent, retain=False, future=None)

    def _write_publish(self, topic: str, payload: bytes, *, retain: bool,
                       future: asyncio.Future[None] | None) -> None:
        proto = self._proto
        if proto is None or proto.transport is None or self._slots is None:
            raise LinkError("not connected to the MQTT broker")
        mid = self._next_packet_id()
        self._slots.take()  # the caller checked, or waited for, a free slot
        self._pending[mid] = future
        proto.transport.write(wire.publish(topic, payload, packet_id=mid, retain=retain, level=self._level))

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            if self.connected.is_set() and self._subscribed:
                self._send_probe()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                      timeout: float = 10.0) -> None:
        """Publish with QoS 1 and wait for the broker's PUBACK."""
        if not self.connected.is_set() or self._slots is None:
            raise LinkError("not connected to the MQTT broker")
        slots = self._slots
        future: asyncio.Future[None] = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await slots.wait()
                if slots is not self._slots:
                    raise LinkError("the connection to the MQTT broker ended")
                self._write_publish(topic, payload, retain=retain, future=future)
                await future
        except TimeoutError as err:
            raise LinkError(f"no PUBACK for {topic} within {timeout}s") from err
