"""The fleet's MQTT connection: paho-mqtt in its own network thread, bridged to asyncio.

Why paho directly and not aiomqtt here: aiomqtt's incoming queue either grows without bound or
discards when full. The ingest needs backpressure instead: when its bounded queue is full, the
network thread waits, stops reading the socket, and the broker holds further messages for the
fleet's persistent session (up to the broker's own `max_queued_messages`).

Acknowledgements are manual (paho's `manual_ack`): a message is acknowledged to the broker only
when the ingest says it is final, i.e. stored by a committed transaction or refused and recorded
(`MqttLink.ack`). Until then the broker keeps it for the fleet's session and sends it again after
a reconnect, so a crash of the fleet loses nothing. How many unacknowledged messages the broker
sends at once is the window: over MQTT 5, the Receive Maximum the link asks for (`receive_max`);
over 3.1.1 the broker's own setting (docs/fleet.md, "Acknowledgement after commit").

A broker that is down does not stop the fleet: the link starts anyway and paho's thread keeps
trying, 1 s after a failure, doubling to 30 s (RECONNECT_MIN_S, RECONNECT_MAX_S), for as long as
it takes; /healthz and the status page say so meanwhile. Only a broker that answers and refuses
the fleet (bad credentials, a client id it may not use) stops the start: that is a
configuration error, not an outage.
"""

import asyncio
import collections
import contextlib
import logging
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contract import PROBE_TOPIC, fleet_subscription
from fleet.settings import MqttTarget

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1  # paho waits this long after a failed attempt, doubling up to RECONNECT_MAX_S
RECONNECT_MAX_S = 30
FIRST_CONTACT_S = 15.0  # the start waits this long for a broker that answers slowly, then goes on
PROBE_MISSES = 6  # probes that may fail to come back before the fleet counts as not hearing
KEEPALIVE_S = 30
DISCONNECT_WAIT_S = 5.0  # close() waits this long for paho to write what it holds (acks) and disconnect
PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}


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


class MqttLink:
    """Subscribes to everything devices send and publishes commands and desired state.

    It also sends itself a probe every `probe_s` seconds on PROBE_TOPIC, inside its own
    subscription: a probe that comes back proves the broker still delivers to the fleet, which
    neither the socket nor a SUBACK can (a broker can drop a session's subscriptions and keep
    the socket open).
    """

    def __init__(self, target: MqttTarget, *, client_id: str, queue_max: int,
                 shared_group: str | None = None, ca_file: str | None = None, probe_s: float = 5.0,
                 protocol: str = "5", session_expiry_s: int = 7 * 86_400, receive_max: int = 5_000) -> None:
        self.target = target
        self.queue_max = queue_max
        self.protocol = protocol
        self.session_expiry_s = session_expiry_s
        self.receive_max = receive_max
        self.probe_s = probe_s
        self.probe_window_s = round(PROBE_MISSES * probe_s, 1)
        # The queue is bounded by `_slots`: the network thread takes a slot before it enqueues
        # (and waits for one when there is none); `take()` gives the slot back.
        # The network thread appends; the event loop is woken only when no wake-up is pending (one
        # call_soon_threadsafe per burst, not per message: that call was 13 % of the ingest's CPU).
        self._items: collections.deque[RawMessage] = collections.deque()
        self._ready = asyncio.Event()
        self._wake_scheduled = False
        self._slots = threading.Semaphore(queue_max)
        self.connected = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._subscription = fleet_subscription()
        if shared_group:
            self._subscription = f"$share/{shared_group}/{self._subscription}"
        self._subscriptions = [self._subscription]
        if shared_group:  # a shared subscription may hand our probe to another instance
            self._subscriptions.append(PROBE_TOPIC)
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._closing = False
        self.refused: str | None = None
        # written by paho's thread, read by /healthz: plain assignments, each atomic
        self._subscribe_mid: int | None = None
        self._subscribed = False
        self._connected_at: float | None = None
        self._probe_back_at: float | None = None
        self._hearing_since: float | None = None
        self._unreachable_since: float | None = None
        self._connect_failures = 0
        self._connect_error: str | None = None
        self._first_contact = threading.Event()  # the first attempt answered, failed or was refused
        self._probe_nonce = uuid.uuid4().hex.encode()
        self._probes_sent = 0
        self._probe_task: asyncio.Task[None] | None = None
        # acknowledgements: each connection has a number; a message is acknowledged on the
        # connection it came on only (after a reconnect the broker sends it again, under a packet
        # id it may by then have given to another message). The lock orders an ack against a
        # connection's end: none is sent for a connection that is gone.
        self._receiving = True
        self._connection = 0
        self._ack_lock = threading.Lock()
        self.acked = 0  # messages acknowledged to the broker
        self.ack_skipped = 0  # final on a connection that had ended: the broker sends them again
        self._disconnected = threading.Event()  # set by paho's thread once a connection has ended
        self._session_known = False  # the broker has held the fleet's session before (a later CONNACK must say so)
        if protocol == "5":
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                 manual_ack=True)
        else:  # 3.1.1 has no clean_start: the session persists while clean_session is False
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=PROTOCOLS[protocol],
                                 clean_session=False, manual_ack=True)
        if target.username:
            password = target.password.get_secret_value() if target.password else None
            client.username_pw_set(target.username, password)
        if target.tls:
            client.tls_set_context(ssl.create_default_context(cafile=ca_file))
        client.enable_logger(logging.getLogger("fleet.paho"))
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._client = client

    async def __aenter__(self) -> "MqttLink":
        """Start the link. A broker that answers is connected to before this returns (so nothing
        a device sends right after the start is missed); one that does not is retried in the
        background. Raises LinkError only when the broker answers and refuses the fleet."""
        if self.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.session_expiry_s
            properties.ReceiveMaximum = self.receive_max
            self._client.connect_async(self.target.host, self.target.port, KEEPALIVE_S, clean_start=False,
                                       properties=properties)
        else:
            self._client.connect_async(self.target.host, self.target.port, KEEPALIVE_S)
        self._client.loop_start()
        await asyncio.to_thread(self._first_contact.wait, FIRST_CONTACT_S)
        if self._connected_at is not None:
            with contextlib.suppress(TimeoutError):  # set by the network thread through the loop, right behind
                await asyncio.wait_for(self.connected.wait(), 2)
        elif self.refused is not None:
            self._closing = True
            self._client.disconnect()
            await asyncio.to_thread(self._client.loop_stop)
            raise LinkError(f"the MQTT broker at {self.target!r} refused the fleet: {self.refused}")
        else:
            log.warning("the fleet starts without the MQTT broker at %r and keeps trying (after %d s at first, "
                        "doubling to every %d s)", self.target, RECONNECT_MIN_S, RECONNECT_MAX_S)
        self._probe_task = asyncio.create_task(self._probe_loop(), name="fleet-mqtt-probe")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stop_receiving(self) -> None:
        """Queue nothing more (idempotent): a message arriving from now on is left unacknowledged,
        for the broker to send again on the next start. The connection stays, so the ingest can
        drain the queue and acknowledge what it stores."""
        self._receiving = False

    async def close(self) -> None:
        """Disconnect (idempotent). What is still queued is never acknowledged: the broker sends it
        again on the next connection."""
        if self._closing:
            return
        self._receiving = False
        self._closing = True
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        connected = self.connected.is_set()
        if connected:
            # The broker handles a connection's packets in order: once it has answered a publish
            # sent after the last acks, it has taken them. Closing without that loses them when
            # the socket still holds unread data from the broker: the close then resets the
            # connection, and the broker's kernel drops what it had not yet read (measured).
            with contextlib.suppress(LinkError):
                await self.publish(PROBE_TOPIC, self._probe_nonce + b" closing", timeout=DISCONNECT_WAIT_S)
        logging.getLogger("fleet.paho").setLevel(logging.CRITICAL)  # its loop complains while stopping
        self._disconnected.clear()
        self._client.disconnect()
        if connected:  # paho writes DISCONNECT, closes the socket, then calls back
            await asyncio.to_thread(self._disconnected.wait, DISCONNECT_WAIT_S)
        await asyncio.to_thread(self._client.loop_stop)

    # paho's network thread ------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: object) -> None:
        if reason.is_failure:
            log.error("broker refused the fleet: %s", reason)
            self.refused = str(reason)
            self._first_contact.set()
            return
        if self._unreachable_since is not None:
            log.info("the broker answers again after %d failed attempts", self._connect_failures)
        self._unreachable_since = None
        self._connect_failures = 0
        self._subscribed = False
        self._probe_back_at = None
        self._hearing_since = None
        self._connected_at = time.monotonic()
        with self._ack_lock:
            self._connection += 1
        if self._session_known and not flags.session_present:
            # the broker no longer had the fleet's session (it expired, or the broker lost its
            # persistence): what it held is gone, and shows up as gaps in the devices' streams
            log.warning("the broker had no session for the fleet: messages it held for it are lost")
        self._session_known = True
        _, self._subscribe_mid = client.subscribe([(topic, 1) for topic in self._subscriptions])
        log.info("connected to %r, subscribing to %s", self.target, self._subscription)
        self._loop.call_soon_threadsafe(self.connected.set)
        self._first_contact.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # paho calls this inside its `except OSError` (TLS errors included): the error is at hand
        error = sys.exc_info()[1]
        self._connect_error = f"{type(error).__name__}: {error}"[:200] if error is not None else None
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            log.warning("cannot reach the MQTT broker at %r (%s); retrying", self.target, self._connect_error)
        self._connect_failures += 1
        self._first_contact.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reasons: list[ReasonCode],
                      properties: object) -> None:
        if mid != self._subscribe_mid:
            return
        failed = [str(r) for r in reasons if r.is_failure]
        self._subscribed = not failed
        if failed:
            self.refused = f"the broker refused the subscription ({', '.join(failed)})"
            log.error("%s", self.refused)
        else:
            self.refused = None
            self._send_probe()  # at once: the fleet hears the broker again when it comes back

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason: ReasonCode, properties: object) -> None:
        self._subscribed = False
        self._connected_at = None
        self._hearing_since = None
        with self._ack_lock:  # acks from now on would go to the next connection: none are sent
            self._connection += 1
        self._disconnected.set()
        if not self._closing:
            log.warning("lost the broker (%s); paho reconnects", reason)
        self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        # paho's thread dies with any exception raised here, and the fleet with it: nothing may escape
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers refuse such topics; counted if one gets through anyway
            topic = "(topic is not UTF-8)"
        if topic == PROBE_TOPIC:
            if bytes(msg.payload).startswith(self._probe_nonce):  # ours, not another instance's
                now = time.monotonic()
                back_at = self._probe_back_at
                if self._hearing_since is None or back_at is None or now - back_at > self.probe_window_s:
                    self._hearing_since = now  # hearing again, after a new connection or a deaf spell
                self._probe_back_at = now
            if msg.qos:  # final here: a probe is never stored
                client.ack(msg.mid, msg.qos)
            return
        if not self._receiving:
            return  # stopping: left unacknowledged, the broker sends it again on the next start
        raw = RawMessage(topic, bytes(msg.payload), bool(msg.retain), msg.mid, msg.qos, self._connection)
        while not self._slots.acquire(timeout=1.0):  # full: hold the socket until there is room
            if not self._receiving:
                return
        self._items.append(raw)
        if not self._wake_scheduled:  # a wake-up still pending will find this message too
            self._wake_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the event loop has closed: shutting down
                self._wake_scheduled = False

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object,
                    properties: object) -> None:
        self._loop.call_soon_threadsafe(self._resolve, mid)

    def _resolve(self, mid: int) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    # asyncio side ---------------------------------------------------------------------------
    def _wake(self) -> None:
        self._wake_scheduled = False  # first: a message appended from now on schedules another
        self._ready.set()

    async def _wait_items(self, timeout: float) -> bool:
        """Whether a message is queued within `timeout` s (a wake-up may find none: wait on)."""
        deadline = self._loop.time() + timeout
        while not self._items:
            self._ready.clear()
            if self._items:
                break
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._ready.wait(), remaining)
            except TimeoutError:
                return bool(self._items)
        return True

    async def take(self, max_items: int, wait_s: float, first_within: float = 0.5) -> list[RawMessage]:
        """Up to `max_items` messages: the first within `first_within` s (else none), then at most
        `wait_s` for more. Waiting takes nothing off the queue, so the timeouts are safe."""
        if not await self._wait_items(first_within):
            return []
        batch: list[RawMessage] = []
        deadline = self._loop.time() + wait_s
        while True:
            while self._items and len(batch) < max_items:
                batch.append(self._items.popleft())
            if len(batch) >= max_items:
                break
            remaining = deadline - self._loop.time()
            if remaining <= 0 or not await self._wait_items(remaining):
                break
        if batch:
            self._slots.release(len(batch))
        return batch

    def ack(self, messages: Sequence[RawMessage]) -> None:
        """Acknowledge final messages to the broker, in the order given (the order received).

        Call it only once each message is stored by a committed transaction or is final without
        a store (refused and recorded, skipped): the broker forgets an acknowledged message. One
        that came on an earlier connection is not acknowledged: the broker has sent it again on
        the current one, and that copy is acknowledged when the ingest has deduped it."""
        with self._ack_lock:
            for message in messages:
                if not message.qos:
                    continue
                if message.connection != self._connection:
                    self.ack_skipped += 1
                    continue
                self._client.ack(message.mid, message.qos)
                self.acked += 1

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

    def _send_probe(self) -> None:
        """QoS 1: it queues behind what the broker holds for the fleet, like a device's message."""
        self._probes_sent += 1
        self._client.publish(PROBE_TOPIC, self._probe_nonce + b" %d" % self._probes_sent, qos=1)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            if self.connected.is_set() and self._subscribed:
                self._send_probe()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                      timeout: float = 10.0) -> None:
        """Publish with QoS 1 and wait for the broker's PUBACK."""
        if not self.connected.is_set():
            raise LinkError("not connected to the MQTT broker")
        future: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise LinkError(f"publish failed: {mqtt.error_string(info.rc)}")
        self._pending[info.mid] = future
        if info.is_published():
            self._resolve(info.mid)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError as err:
            self._pending.pop(info.mid, None)
            raise LinkError(f"no PUBACK for {topic} within {timeout}s") from err
