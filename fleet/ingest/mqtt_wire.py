"""MQTT 3.1.1 and 5 framing for the fleet's own broker connection (fleet/ingest/link.py).

Only what that connection sends (CONNECT, SUBSCRIBE, PUBLISH at QoS 1, PUBACK, PINGREQ,
DISCONNECT) and receives (CONNACK, SUBACK, PUBLISH at QoS 0 or 1, PUBACK, PINGRESP, DISCONNECT).
Received bytes are split into packets by `Decoder`, which parses a PUBLISH in place: the ingest
receives tens of thousands a second, so no object per packet beyond the message itself.
"""

from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGRESP, DISCONNECT_TYPE = 13, 14
LEVEL = {"5": 5, "3.1.1": 4}  # the CONNECT's protocol level
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"  # MQTT 5: reason 0 (normal), no properties; the same bytes in 3.1.1
PACKET_MAX = 1 << 28  # the largest remaining length MQTT can encode (4 bytes of variable length)
NOT_UTF8 = "(topic is not UTF-8)"

# MQTT 5 property identifiers this connection reads or writes
SESSION_EXPIRY, RECEIVE_MAXIMUM, REASON_STRING = 0x11, 0x21, 0x1F
# 3.1.1 CONNACK return codes, as MQTT 5 names them
CONNACK_311 = {1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
               4: "bad user name or password", 5: "not authorized"}
REASONS_5 = {0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
             0x83: "implementation specific error", 0x84: "unsupported protocol version",
             0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
             0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned", 0x8C: "bad authentication method",
             0x8F: "topic filter invalid", 0x90: "topic name invalid", 0x91: "packet identifier in use",
             0x95: "packet too large", 0x97: "quota exceeded", 0x99: "payload format invalid",
             0x9A: "retain not supported", 0x9B: "QoS not supported", 0x9C: "use another server",
             0x9D: "server moved", 0x9E: "shared subscriptions not supported",
             0x9F: "connection rate exceeded", 0xA2: "wildcard subscriptions not supported"}


class WireError(Exception):
    """The broker sent bytes that are not the MQTT this connection expects: the connection is dropped."""


def reason_text(code: int, level: int) -> str:
    if level == 5:
        return f"{REASONS_5.get(code, 'reason')} (0x{code:02X})"
    return f"{CONNACK_311.get(code, 'refused')} ({code})"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def string(b: bytes) -> bytes:
    """An MQTT string or binary field: two bytes of length, then the bytes."""
    return len(b).to_bytes(2, "big") + b


def packets(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The whole packets at the start of `data` as (first byte, body), and how many bytes they took
    (the rest is a packet not yet wholly received)."""
    decoder = Decoder()
    decoder.feed(data)
    found = []
    while (packet := decoder.next()) is not None:
        found.append(packet)
    return found, len(data) - decoder.buffered()


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def connect(client_id: str, *, level: int, keepalive: int, clean: bool, username: str | None = None,
            password: str | None = None, session_expiry_s: int = 0, receive_max: int = 0,
            will: tuple[bytes, bytes] | None = None) -> bytes:
    """CONNECT. MQTT 5 `clean` is Clean Start (the session's lifetime is `session_expiry_s`);
    3.1.1 `clean` is Clean Session (False: the broker keeps the session). `will`: (topic,
    payload), published retained at QoS 1 (3.1.1 only: MQTT 5 would need will properties)."""
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    if will is not None:
        flags |= 0x04 | 0x08 | 0x20  # will, QoS 1, retained
    header = string(b"MQTT") + bytes((level, flags)) + keepalive.to_bytes(2, "big")
    if level == 5:
        props = b""
        if session_expiry_s:
            props += bytes((SESSION_EXPIRY,)) + session_expiry_s.to_bytes(4, "big")
        if receive_max:
            props += bytes((RECEIVE_MAXIMUM,)) + receive_max.to_bytes(2, "big")
        header += varint(len(props)) + props
    body = string(client_id.encode())
    if will is not None:
        body += string(will[0]) + string(will[1])
    if username is not None:
        body += string(username.encode())
    if password is not None:
        body += string(password.encode())
    return _packet(CONNECT << 4, header + body)


def subscribe(packet_id: int, topics: list[tuple[str | bytes, int]], *, level: int) -> bytes:
    body = packet_id.to_bytes(2, "big") + (b"\x00" if level == 5 else b"")
    for topic, qos in topics:
        body += string(topic.encode() if isinstance(topic, str) else topic) + bytes((qos,))
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def publish(topic: str | bytes, payload: bytes, *, packet_id: int, retain: bool, level: int,
            dup: bool = False) -> bytes:
    """A QoS 1 PUBLISH."""
    first = PUBLISH << 4 | 0x02 | (0x08 if dup else 0) | (0x01 if retain else 0)
    name = topic.encode() if isinstance(topic, str) else topic
    body = string(name) + packet_id.to_bytes(2, "big") + (b"\x00" if level == 5 else b"") + payload
    return _packet(first, body)


def puback(packet_id: int) -> bytes:
    """PUBACK, success (MQTT 5 allows the reason code and properties left out then)."""
    return bytes((PUBACK << 4, 2, packet_id >> 8, packet_id & 0xFF))


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    code: int  # 0: accepted
    receive_max: int  # how many QoS 1 publishes the broker takes unacknowledged (65,535 unless it says)
    reason: str | None  # the broker's reason string, if it sent one


@dataclass(frozen=True, slots=True)
class Ack:
    """A CONNACK's, SUBACK's or PUBACK's content (a PUBLISH is delivered apart, see Decoder)."""

    kind: int
    packet_id: int = 0
    codes: tuple[int, ...] = ()  # SUBACK: one per topic; PUBACK: its reason (0 when left out)
    connack: Connack | None = None


def _props(buf: bytes | bytearray, i: int) -> tuple[dict[int, int | str], int]:
    """An MQTT 5 property block at `i`: the integer and string properties this connection reads
    (others are skipped by their type), and the index after it."""
    length, i = _read_varint(buf, i)
    end = i + length
    found: dict[int, int | str] = {}
    while i < end:
        ident = buf[i]
        i += 1
        if ident in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):  # byte
            found[ident] = buf[i]
            i += 1
        elif ident in (0x13, 0x21, 0x22, 0x23):  # two-byte integer
            found[ident] = int.from_bytes(buf[i:i + 2], "big")
            i += 2
        elif ident in (0x02, 0x11, 0x18, 0x27):  # four-byte integer
            found[ident] = int.from_bytes(buf[i:i + 4], "big")
            i += 4
        elif ident == 0x0B:  # variable byte integer
            found[ident], i = _read_varint(buf, i)
        elif ident in (0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F):  # string or binary
            size = int.from_bytes(buf[i:i + 2], "big")
            found[ident] = bytes(buf[i + 2:i + 2 + size]).decode(errors="replace")
            i += 2 + size
        elif ident == 0x26:  # user property: a string pair
            for _ in range(2):
                i += 2 + int.from_bytes(buf[i:i + 2], "big")
        else:
            raise WireError(f"unknown MQTT 5 property 0x{ident:02X}")
    if i != end:
        raise WireError("a property block overruns its length")
    return found, end


def _read_varint(buf: bytes | bytearray, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 21:
            raise WireError("bad variable-length integer")
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


def parse_ack(first: int, body: bytes, level: int) -> Ack:
    """CONNACK, SUBACK, PUBACK, PINGRESP or DISCONNECT (anything else: WireError)."""
    kind = first >> 4
    try:
        if kind == CONNACK:
            code = body[1]
            props: dict[int, int | str] = {}
            if level == 5 and len(body) > 2:
                props, _ = _props(body, 2)
            receive_max = props.get(RECEIVE_MAXIMUM, 65_535)
            reason = props.get(REASON_STRING)
            return Ack(CONNACK, connack=Connack(bool(body[0] & 1), code,
                                                receive_max if isinstance(receive_max, int) else 65_535,
                                                reason if isinstance(reason, str) else None))
        if kind == SUBACK:
            packet_id = int.from_bytes(body[:2], "big")
            i = _props(body, 2)[1] if level == 5 else 2
            return Ack(SUBACK, packet_id, tuple(body[i:]))
        if kind == PUBACK:
            return Ack(PUBACK, int.from_bytes(body[:2], "big"), (body[2] if len(body) > 2 else 0,))
        if kind in (PINGRESP, DISCONNECT_TYPE):
            return Ack(kind, codes=(body[0],) if body else ())
    except IndexError as err:
        raise WireError(f"a truncated packet of type {kind}") from err
    raise WireError(f"an unexpected packet of type {kind}")


class Decoder:
    """Splits received bytes into packets. `feed` appends; `next` gives the next whole packet as
    (first byte, body) or None. Bodies over `packet_max` bytes are refused (WireError)."""

    __slots__ = ("_buf", "_pos", "packet_max")

    def __init__(self, packet_max: int = PACKET_MAX) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.packet_max = packet_max

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next(self) -> tuple[int, bytes] | None:
        buf, pos = self._buf, self._pos
        size = len(buf)
        if size - pos < 2:
            return None
        byte = buf[pos + 1]
        if byte < 0x80:  # the common case: a body under 128 bytes
            length, i = byte, pos + 2
        else:
            length, shift, i = 0, 0, pos + 1
            while True:
                if i >= size:
                    return None
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise WireError("bad remaining length")
            if length > self.packet_max:
                raise WireError(f"a {length}-byte packet")
        end = i + length
        if end > size:
            return None
        self._pos = end
        return buf[pos], bytes(buf[i:end])


def split_publish(first: int, body: bytes, level: int) -> tuple[str, int, bytes]:
    """A PUBLISH's topic, packet id (0 at QoS 0) and payload."""
    try:
        size = (body[0] << 8) | body[1]
        i = 2 + size
        try:
            topic = body[2:i].decode()
        except UnicodeDecodeError:  # brokers refuse such topics; counted if one gets through anyway
            topic = NOT_UTF8
        packet_id = 0
        if first & 0x06:
            packet_id = (body[i] << 8) | body[i + 1]
            i += 2
        if level == 5:
            length = body[i]
            if length < 0x80:
                i += 1 + length
            else:
                length, i = _read_varint(body, i)
                i += length
    except IndexError as err:
        raise WireError("a truncated PUBLISH") from err
    if i > len(body):
        raise WireError("a truncated PUBLISH")
    return topic, packet_id, body[i:]
