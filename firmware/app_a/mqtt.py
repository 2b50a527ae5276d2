# A small MQTT 3.1.1 client: QoS 0 and 1, a will, persistent sessions, keepalive, TLS, and a
# check_msg() that waits on poll() with a timeout. Policy (when to reconnect, what to resend)
# belongs to the caller. connect(sock=...) takes any stream with readinto/write that poll()
# understands, so the framing can be tested byte by byte on the host.
# ssl: a TLS client context (trust.py); the broker's certificate is then checked against its
# CAs and against `host` before a single MQTT byte (the password) is written. A refused
# certificate or a failed handshake raises MQTTError("TLS handshake failed: <why>").
import select
import struct
import time

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0
BIG = 1024  # bytes: a longer PUBLISH may be streamed (on_big)


class MQTTError(OSError):
    # A broken or refused session. `code` is the CONNACK return code or SUBACK result, if any.
    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def _length(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


def _utf8(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


class MQTTClient:
    def __init__(self, client_id, host="127.0.0.1", port=1883, user=None, password=None,
                 keepalive=30, clean_session=False, timeout_ms=10000, max_packet=16640, ssl=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.ssl = ssl
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.timeout_ms = timeout_ms
        # Incoming packets longer than this are read and thrown away in small chunks (a QoS 1
        # PUBLISH is still acknowledged), so a huge message cannot exhaust the heap.
        self.max_packet = max_packet
        self.oversized = 0
        # on_message(topic: str, payload: memoryview) is called from check_msg() and from the
        # waits for acknowledgements, so it must not publish or subscribe itself.
        self.on_message = None
        # on_big(topic) -> a writable stream or None: a PUBLISH longer than BIG whose topic it
        # takes is written there in small chunks (then closed) instead of into one buffer.
        self.on_big = None
        self.ack = True  # False: PUBLISHes are not acknowledged (the broker hands them over again)
        self._will = None
        self._sock = None
        self._poll = None
        self._pid = 0
        self._last_tx = 0
        self._ping_sent = None
        self._byte = bytearray(1)

    def _ticks(self):
        return time.ticks_ms()

    @property
    def connected(self):
        return self._sock is not None

    def set_will(self, topic, payload, qos=1, retain=True):
        self._will = (topic, payload, qos, retain)

    def connect(self, sock=None):
        # Returns the broker's session-present flag.
        if sock is None:
            import socket
            addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0][-1]
            sock = socket.socket()
            tcp = sock
            try:
                sock.settimeout(self.timeout_ms / 1000)
                sock.connect(addr)
                if self.ssl is not None:
                    sock = None  # from here on a failure is the handshake's
                    sock = self.ssl.wrap_socket(tcp, server_hostname=self.host)
            except Exception as e:
                tcp.close()
                if sock is None and not isinstance(e, MemoryError):
                    # mbedtls refuses a certificate with ValueError; either way, nothing was sent
                    why = str(e).strip().replace("\n", "; ")
                    raise MQTTError("TLS handshake failed: " + why)
                raise
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._ping_sent = None
        try:
            return self._handshake()
        except OSError:
            self.close()
            raise

    def _handshake(self):
        flags = 0x02 if self.clean_session else 0
        payload = _utf8(self.client_id)
        if self._will:
            topic, message, qos, retain = self._will
            flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
            payload += _utf8(topic) + _utf8(message)
        if self.user is not None:
            flags |= 0x80
            payload += _utf8(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _utf8(self.password)
        head = b"\x00\x04MQTT\x04" + struct.pack("!BH", flags, self.keepalive)
        self._send_packet(CONNECT, head, payload)
        packet = self._read_packet(self.timeout_ms)
        if packet is None:
            raise MQTTError("no CONNACK")
        kind, body = packet
        if kind != CONNACK or body is None or len(body) != 2:
            raise MQTTError("expected CONNACK")
        if body[1]:
            raise MQTTError("connection refused", body[1])
        return bool(body[0] & 1)

    def publish(self, topic, payload, qos=0, retain=False):
        if isinstance(payload, str):
            payload = payload.encode()
        head = _utf8(topic)
        pid = 0
        if qos:
            pid = self._next_pid()
            head += struct.pack("!H", pid)
        self._send_packet(PUBLISH | qos << 1 | (1 if retain else 0), head, payload)
        if qos:
            self._wait_for(PUBACK, pid)

    def subscribe(self, topic, qos=1):
        pid = self._next_pid()
        self._send_packet(SUBSCRIBE, struct.pack("!H", pid), _utf8(topic) + bytes((qos,)))
        granted = self._wait_for(SUBACK, pid)
        if granted == 0x80:
            raise MQTTError("subscription refused", granted)
        return granted

    def ping(self):
        self._send_packet(PINGREQ, b"", b"")
        self._ping_sent = self._ticks()

    def check_msg(self, timeout_ms=0):
        # Keeps the session alive and handles what has arrived, waiting at most timeout_ms for
        # the first packet. At most 8 packets per call, so the caller's loop keeps its pace.
        now = self._ticks()
        if self.keepalive:
            limit = self.keepalive * 1000
            if self._ping_sent is not None:
                if time.ticks_diff(now, self._ping_sent) > limit:
                    raise MQTTError("no PINGRESP")
            elif time.ticks_diff(now, self._last_tx) >= limit * 3 // 4:
                self.ping()
        for _ in range(8):
            packet = self._read_packet(timeout_ms)
            if packet is None:
                return
            self._dispatch(*packet)
            timeout_ms = 0

    def disconnect(self):
        try:
            self._send_packet(DISCONNECT, b"", b"")
        finally:
            self.close()

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._poll = None

    # -- framing -------------------------------------------------------------------------------

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _send_packet(self, kind, head, payload):
        if self._sock is None:
            raise MQTTError("not connected")
        data = bytes((kind,)) + _length(len(head) + len(payload)) + head
        # One write for a small packet: a second small write would wait for the broker's
        # delayed ACK (Nagle), tens of milliseconds per message.
        if len(payload) <= 1024:
            self._write(data + payload)
        else:
            self._write(data)
            self._write(payload)
        self._last_tx = self._ticks()

    def _write(self, data):
        view = memoryview(data)
        while view:
            n = self._sock.write(view)
            if not n:
                raise MQTTError("write stalled")
            view = view[n:]

    def _read_into(self, buf):
        view = memoryview(buf)
        while view:
            n = self._sock.readinto(view)
            if not n:
                raise MQTTError("connection closed")
            view = view[n:]
        return buf

    def _read_byte(self):
        return self._read_into(self._byte)[0]

    def _skip(self, n):
        chunk = bytearray(64)
        while n:
            k = min(n, 64)
            self._read_into(memoryview(chunk)[:k])
            n -= k

    def _read_packet(self, timeout_ms):
        # (first byte, body) or None if nothing arrived in time. body is None for a packet
        # that was too long and has been skipped.
        if self._sock is None:
            raise MQTTError("not connected")
        if not self._poll.poll(timeout_ms):
            return None
        kind = self._read_byte()
        size = 0
        shift = 0
        while True:
            b = self._read_byte()
            size |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")
        self._ping_sent = None  # any packet from the broker proves the link is alive
        if kind & 0xF0 == PUBLISH and size > BIG and self.on_big is not None:
            return kind, self._read_big(kind, size)
        body = None
        if size <= self.max_packet:
            try:
                body = bytearray(size)
            except MemoryError:
                pass
        if body is None:
            # Too long for the limit or for the heap right now: skipped, and acknowledged if it
            # is a QoS 1 PUBLISH, so the broker does not hand it over again and again.
            self._skip_oversized(kind, size)
            return kind & 0xF0, None
        return kind, self._read_into(body)

    def _read_big(self, kind, size):
        # The body, or None when on_big took the payload (a QoS 1 PUBLISH is then acknowledged).
        head = self._read_into(bytearray(2))
        topic = self._read_into(bytearray(head[0] << 8 | head[1]))
        sink = self.on_big(bytes(topic).decode())
        if sink is None:
            try:
                body = bytearray(size)
            except MemoryError:
                self._skip_oversized(kind, size - 2 - len(topic), False)
                return None
            body[0:2] = head
            body[2:2 + len(topic)] = topic
            self._read_into(memoryview(body)[2 + len(topic):])
            return body
        n = size - 2 - len(topic)
        pid = None
        if kind & 0x06:
            pid = self._read_into(bytearray(2))
            n -= 2
        chunk = bytearray(128)
        try:
            while n:
                k = min(n, 128)
                sink.write(self._read_into(memoryview(chunk)[:k]))
                n -= k
        finally:
            sink.close()
        if pid is not None:
            self._send_packet(PUBACK, pid, b"")
        return None

    def _skip_oversized(self, kind, size, topic=True):
        self.oversized += 1
        if kind & 0xF0 != PUBLISH or not kind & 0x06:
            self._skip(size)
            return
        tlen = -2  # topic=False: the topic was read already
        if topic:
            tlen = struct.unpack("!H", self._read_into(bytearray(2)))[0]
            self._skip(tlen)
        pid = struct.unpack("!H", self._read_into(bytearray(2)))[0]
        self._skip(size - tlen - 4)
        self._send_packet(PUBACK, struct.pack("!H", pid), b"")

    def _dispatch(self, kind, body):
        # Returns (packet type, packet id, result) for acknowledgements, else None.
        ptype = kind & 0xF0
        if body is None:
            return None
        if ptype == PUBLISH:
            qos = (kind >> 1) & 3
            if qos == 2:
                raise MQTTError("QoS 2 is not supported")
            tlen = (body[0] << 8) | body[1] if len(body) >= 2 else len(body)
            if len(body) < 2 + tlen + (2 if qos else 0):
                raise MQTTError("malformed PUBLISH")
            topic = bytes(body[2:2 + tlen]).decode()
            pos = 2 + tlen
            if qos:
                pid = (body[pos] << 8) | body[pos + 1]
                pos += 2
            if self.on_message:
                self.on_message(topic, memoryview(body)[pos:])
            if qos and self.ack:
                # Acknowledged after the handler ran: at least once, and the handler makes
                # redelivery harmless (command ids, desired-state versions).
                self._send_packet(PUBACK, struct.pack("!H", pid), b"")
        elif ptype in (PUBACK, SUBACK) and len(body) >= 2:
            pid = (body[0] << 8) | body[1]
            return ptype, pid, body[2] if ptype == SUBACK and len(body) > 2 else 0
        return None

    def _wait_for(self, ptype, pid):
        start = self._ticks()
        while True:
            left = self.timeout_ms - time.ticks_diff(self._ticks(), start)
            packet = self._read_packet(max(0, left)) if left > 0 else None
            if packet is None:
                raise MQTTError("timed out waiting for an acknowledgement")
            ack = self._dispatch(*packet)
            if ack and ack[0] == ptype and ack[1] == pid:
                return ack[2]
