"""The MQTT link: one connection at a time, re-established with backoff, draining the queue.

Per connection attempt: reserve a new stream (`ses`), connect with a will (death, reason `lost`,
that `ses`), publish the retained birth, subscribe to the device's downstream topics, then send
queued messages in order while receiving downstream ones. A clean stop drains the queue for a
bounded time, publishes a death with reason `shutdown` and disconnects.
"""

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from contract import device_topic
from edge.backoff import Backoff
from edge.config import AgentConfig, BrokerSettings
from edge.errors import EdgeError, StateError
from edge.queue import Outbox
from edge.stamps import SessionCounter, Stamper
from edge.statefile import StateDisk, describe_write_error
from edge.tls import verifying_context
from edge.uplink import QOS, encode

log = logging.getLogger(__name__)

# Downstream messages received and not yet handled. At the bound aiomqtt discards new ones with a
# warning; a discarded command goes unacknowledged, and the fleet times it out and may resend it.
MAX_INCOMING = 256

DownstreamHandler = Callable[[bytes], None]


def tls_context(broker: BrokerSettings) -> ssl.SSLContext | None:
    """The TLS settings of an mqtts:// link: the broker's certificate must chain to `ca_file` (only
    that file; the system's CAs when it is not set) and name the host of the URL. A broker that
    fails either check is dropped during the handshake, before the password is sent."""
    if not broker.tls:
        return None
    return verifying_context(broker.ca_file, "broker.ca_file")


class Link:
    def __init__(
        self,
        config: AgentConfig,
        *,
        session: SessionCounter,
        stamper: Stamper,
        outbox: Outbox,
        birth_fields: Callable[[], dict[str, Any]],
        handlers: Mapping[str, DownstreamHandler],
        disk: StateDisk | None = None,
    ) -> None:
        self.config = config
        self.disk = disk
        self.session = session
        self.stamper = stamper
        self.outbox = outbox
        self.birth_fields = birth_fields
        self.handlers = {device_topic(config.device_id, suffix): h for suffix, h in handlers.items()}
        self.connected = asyncio.Event()
        self.connections = 0
        self._outage_reported = False
        self.backoff = Backoff(config.broker.backoff_min_s, config.broker.backoff_max_s)
        self.broker_index = 0  # which of broker.urls the next attempt goes to
        # Built once: a missing or unreadable CA file stops the agent at start with one line.
        self._tls = tls_context(config.broker)

    @property
    def reconnects(self) -> int:
        """Connections made after the first one since the agent started."""
        return max(0, self.connections - 1)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a connection up until `stop` is set; then say goodbye and return."""
        device = self.config.device_id
        while not stop.is_set():
            try:
                await self._connection(stop)
            except StateError as err:
                # The attempt's stream cannot be recorded in session.json: a stream that is not on
                # disk could be opened again after a restart, so none is; tried again after the
                # backoff (docs/edge.md, "A full disk").
                level = logging.DEBUG if self._outage_reported else logging.WARNING
                log.log(level, "%s: not connecting, no new stream can be recorded: %s", device, err)
                self._outage_reported = True
                if self.disk is not None:
                    self.disk.write_failed(self.session.path.name, describe_write_error(err.__cause__ or err))
            except aiomqtt.MqttError as err:
                # One warning per outage; each further failed attempt only at debug level.
                level = logging.DEBUG if self._outage_reported else logging.WARNING
                log.log(level, "%s: broker connection failed: %s", device, err)
                self._outage_reported = True
            except ExceptionGroup as group:
                lost, others = group.split(aiomqtt.MqttError)
                if others is not None or lost is None:
                    raise
                log.warning("%s: broker connection lost: %s", device, lost.exceptions[0])
                self._outage_reported = True
            finally:
                self.connected.clear()
            # the next attempt goes to the next node of a clustered broker (broker.other_urls)
            self.broker_index = (self.broker_index + 1) % len(self.config.broker.urls)
            if stop.is_set():
                break
            delay = self.backoff.next_delay()
            log.debug("%s: next attempt in %.1f s (%d queued)", device, delay, self.outbox.depth)
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                pass

    def _client(self, ses: int) -> aiomqtt.Client:
        broker = self.config.broker
        will = encode(self._death(ses, "lost", ts=None))
        address = urlsplit(self.broker_url)
        client = aiomqtt.Client(
            address.hostname or "",
            address.port or broker.port,
            username=broker.username,
            password=broker.password.get_secret_value() if broker.password else None,
            identifier=self.config.device_id,
            clean_session=False,
            keepalive=broker.keepalive_s,
            timeout=broker.timeout_s,
            will=aiomqtt.Will(device_topic(self.config.device_id, "death"), will, qos=QOS, retain=True),
            max_inflight_messages=self.config.queue.inflight,
            max_queued_incoming_messages=MAX_INCOMING,
            tls_context=self._tls,
        )
        client.pending_calls_threshold = self.config.queue.inflight + 8
        return client

    @property
    def broker_url(self) -> str:
        """The address the current (or next) connection uses."""
        return self.config.broker.urls[self.broker_index % len(self.config.broker.urls)]

    def _death(self, ses: int, reason: str, *, ts: int | None) -> dict[str, Any]:
        return {**self.stamper.presence(ses), "ts": ts, "reason": reason}

    async def _connection(self, stop: asyncio.Event) -> None:
        ses = self.session.next_session()
        device = self.config.device_id
        death_topic = device_topic(device, "death")
        async with self._client(ses) as client:
            try:
                await self._session(client, ses, stop)
            except BaseException:
                # Leaving the client's context disconnects cleanly, and the broker then drops
                # the will: say `lost` ourselves (best effort; on a dead connection this fails).
                with contextlib.suppress(aiomqtt.MqttError):
                    death = self._death(ses, "lost", ts=self.stamper.now_ms())
                    await client.publish(death_topic, encode(death), qos=QOS, retain=True, timeout=1)
                raise
            death = self._death(ses, "shutdown", ts=self.stamper.now_ms())
            await client.publish(death_topic, encode(death), qos=QOS, retain=True)
            log.info("%s: said goodbye (stream %d, %d still queued)", device, ses, self.outbox.depth)

    async def _session(self, client: aiomqtt.Client, ses: int, stop: asyncio.Event) -> None:
        """One connection's life: birth, subscriptions, then send and receive until `stop`."""
        device = self.config.device_id
        self.stamper.open_stream(ses)
        self.connections += 1
        birth = {**self.stamper.presence(ses), **self.birth_fields(), **self.stamper.stream_fields()}
        await client.publish(device_topic(device, "birth"), encode(birth), qos=QOS, retain=True)
        await client.subscribe([(topic, QOS) for topic in self.handlers])
        self.backoff.reset()
        self._outage_reported = False
        self.connected.set()
        log.info(
            "%s: connected to %s, stream %d, %d queued",
            device,
            self.broker_url,
            ses,
            self.outbox.depth,
        )
        async with asyncio.TaskGroup() as tasks:
            receiving = tasks.create_task(self._receive(client), name=f"edge-receive-{device}")
            sending = tasks.create_task(self._send(client), name=f"edge-send-{device}")
            await stop.wait()
            await self._drain()
            receiving.cancel()
            sending.cancel()

    async def _drain(self) -> None:
        """Give the sender a bounded time to empty the queue before a clean disconnect."""
        try:
            async with asyncio.timeout(self.config.shutdown_drain_s):
                await self.outbox.empty.wait()
        except TimeoutError:
            pass

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            handler = self.handlers.get(message.topic.value)
            # An empty payload is the fleet clearing a retained message: nothing to do.
            if handler is None or not isinstance(message.payload, bytes | bytearray) or not message.payload:
                continue
            try:
                handler(bytes(message.payload))
            except EdgeError as err:
                log.error(
                    "%s: could not handle a message on %s: %s",
                    self.config.device_id,
                    message.topic.value,
                    err,
                )

    async def _send(self, client: aiomqtt.Client) -> None:
        """Publish queued messages in order, keeping up to `inflight` awaiting their PUBACK.

        A sliding window, not batches: a new message goes out as soon as the oldest is
        acknowledged, so the link never idles waiting for the last PUBACK of a batch (which a
        broker without TCP_NODELAY holds back for tens of milliseconds). Only the acknowledged
        head leaves the queue: whatever follows a missing PUBACK is sent again on the next
        connection, so a replay stays in order (at least once; the fleet drops duplicates).
        """
        window = self.config.queue.inflight
        inflight: deque[tuple[int, asyncio.Task[None]]] = deque()
        appended: asyncio.Task[bool] | None = None
        last_sent = 0
        try:
            while True:
                acked_through = 0
                while inflight and inflight[0][1].done():
                    message_id, publishing = inflight.popleft()
                    publishing.result()  # a failed publish ends the connection
                    acked_through = message_id
                if acked_through:
                    self.outbox.ack_through(acked_through)
                room = window - len(inflight)
                if room:
                    self.outbox.appended.clear()
                    batch = self.outbox.peek(room, after=last_sent)
                    for message in batch:
                        publish = client.publish(message.topic, message.payload, qos=message.qos)
                        inflight.append((message.id, asyncio.create_task(publish)))
                    if batch:
                        last_sent = batch[-1].id
                        self.outbox.sent(last_sent)
                        room -= len(batch)
                wake: set[asyncio.Future[Any]] = set()
                if inflight:
                    wake.add(inflight[0][1])
                if room:
                    if appended is None or appended.done():
                        appended = asyncio.create_task(self.outbox.appended.wait())
                    wake.add(appended)
                await asyncio.wait(wake, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for _, publishing in inflight:
                publishing.cancel()
            if appended is not None:
                appended.cancel()
