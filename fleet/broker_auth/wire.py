"""MQTT framing for the embedded broker's gate: the CONNECT read before amqtt sees the client,
and a reader that stops any packet over the account's size limit before its body is read.

amqtt 0.12 looks up (and, for a clean session, deletes) the session of a CONNECT's client id
before it asks the auth plugins, so a refused login could still end the session it named. The
broker therefore reads and judges the CONNECT here first; only an accepted client reaches amqtt,
which re-reads that same CONNECT from `LimitedReader`'s buffer.
"""

import asyncio
import logging
from dataclasses import dataclass

from amqtt.adapters import BufferReader, ReaderAdapter
from amqtt.mqtt.connect import ConnectPacket

from fleet.broker_auth.limits import packet_limit

log = logging.getLogger(__name__)

CONNECT, PUBLISH = 1, 3
MQTT_311 = 4
# CONNACK return codes of MQTT 3.1.1
BAD_PROTOCOL, SERVER_UNAVAILABLE, NOT_AUTHORIZED = 1, 3, 5


class WireError(Exception):
    """Not an acceptable MQTT packet; the connection is closed without an answer."""


class PacketTooLarge(Exception):
    """A packet over the account's limit: the connection is closed before its body is read."""


@dataclass(frozen=True)
class Connect:
    client_id: str  # "" when the client sent none
    username: str | None
    password: str | None
    protocol_level: int
    will_topic: str | None
    will_payload: bytes | None


async def _remaining_length(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    value, raw = 0, bytearray()
    for shift in (0, 7, 14, 21):
        byte = (await reader.readexactly(1))[0]
        raw.append(byte)
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, bytes(raw)
    raise WireError("remaining length longer than 4 bytes")


async def read_connect(reader: asyncio.StreamReader, max_remaining: int) -> bytes:
    """The first packet, whole; it must be a CONNECT of at most `max_remaining` bytes after its
    fixed header. Raises WireError, or IncompleteReadError when the client goes away."""
    first = await reader.readexactly(1)
    if first[0] != CONNECT << 4:
        raise WireError("the first packet is not a CONNECT")
    remaining, length_bytes = await _remaining_length(reader)
    if remaining > max_remaining:
        raise WireError(f"a {remaining}-byte CONNECT")
    return first + length_bytes + await reader.readexactly(remaining)


async def parse_connect(raw: bytes) -> Connect:
    """The fields the gate judges, decoded by amqtt's own parser (the one that decodes it again)."""
    try:
        packet = await ConnectPacket.from_stream(BufferReader(raw))
        header, payload = packet.variable_header, packet.payload
        if header is None or payload is None or packet.proto_name != "MQTT":
            raise WireError("not an MQTT CONNECT")
        will = header.will_flag
        return Connect(client_id="" if payload.client_id_is_random else str(payload.client_id),
                       username=payload.username if header.username_flag else None,
                       password=payload.password if header.password_flag else None,
                       protocol_level=packet.proto_level,
                       will_topic=payload.will_topic if will else None,
                       will_payload=bytes(payload.will_message) if will and payload.will_message is not None
                       else None)
    except WireError:
        raise
    except Exception as err:  # any decoding failure of untrusted bytes: refuse, never crash the gate
        raise WireError(f"malformed CONNECT ({type(err).__name__})") from err


def connack(code: int) -> bytes:
    return bytes((0x20, 0x02, 0x00, code))


class LimitedReader(ReaderAdapter):
    """amqtt's view of the socket: the buffered CONNECT first, then packet by packet, each fixed
    header checked against the account's limit before the body is pulled from the socket. For a
    PUBLISH the exact payload size is checked too (from its topic length)."""

    def __init__(self, reader: asyncio.StreamReader, first_packet: bytes, *, payload_max: int,
                 who: str) -> None:
        self._reader = reader
        self._buffer = bytearray(first_packet)
        self._left = 0  # body bytes of the current packet still on the socket
        self._payload_max = payload_max
        self._packet_max = packet_limit(payload_max)
        self._who = who

    async def read(self, n: int = -1) -> bytes:
        if n < 0:  # amqtt always asks for a size; 'all until EOF' would defeat the limit
            raise WireError("unbounded read")
        while len(self._buffer) < n:
            if self._left:
                chunk = await self._reader.read(min(self._left, 65536))
                if not chunk:
                    break
                self._left -= len(chunk)
                self._buffer += chunk
            elif not await self._next_packet():
                break
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data  # shorter than n only at EOF, which amqtt reads as 'no more data'

    async def _next_packet(self) -> bool:
        try:
            first = await self._reader.readexactly(1)
            remaining, length_bytes = await _remaining_length(self._reader)
            header = first + length_bytes
            if remaining > self._packet_max:
                self._refuse(remaining)
            if first[0] >> 4 == PUBLISH and remaining >= 2:
                topic_length = await self._reader.readexactly(2)
                packet_id = 2 if first[0] & 0x06 else 0
                payload = remaining - 2 - int.from_bytes(topic_length, "big") - packet_id
                if payload > self._payload_max:
                    self._refuse(payload)
                header += topic_length
                remaining -= 2
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        self._buffer += header
        self._left = remaining
        return True

    def _refuse(self, size: int) -> None:
        log.warning("embedded broker: disconnected %s: a %d-byte packet or payload, over its %d-byte limit",
                    self._who, size, self._payload_max)
        raise PacketTooLarge(f"{size} bytes")

    def feed_eof(self) -> None:
        self._reader.feed_eof()
