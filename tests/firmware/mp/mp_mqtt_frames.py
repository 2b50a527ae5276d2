# MQTT framing, byte by byte, under the real MicroPython:
#   micropython mp_mqtt_frames.py <slot folder> <case>     (or "--list")
# The client is given a scripted stream (the lowest boundary: bytes in, bytes out) that
# select.poll() understands through the stream ioctl protocol.
import io
import select
import sys

sys.path.insert(0, sys.argv[1])
from mqtt import MQTTClient, MQTTError

MP_STREAM_POLL = 3
MP_STREAM_GET_FILENO = 10
CONNACK_OK = b"\x20\x02\x00\x00"


class Wire(io.IOBase):
    # Bytes the "broker" sends are queued in `inbound`; what the client writes lands in `out`.
    # `chunk` limits every read, to prove the client copes with short reads.
    def __init__(self, inbound=b"", chunk=4096):
        self.inbound = bytearray(inbound)
        self.out = bytearray()
        self.chunk = chunk
        self.closed = False
        self.eof = False

    def feed(self, data):
        self.inbound += data

    def take(self):
        data = bytes(self.out)
        self.out = bytearray()
        return data

    def readinto(self, buf):
        n = min(len(buf), len(self.inbound), self.chunk)
        if not n and not self.eof:
            raise OSError(11)  # EAGAIN: nothing there, as a socket with a timeout would say
        buf[:n] = self.inbound[:n]
        self.inbound = self.inbound[n:]
        return n

    def write(self, data):
        self.out += data
        return len(data)

    def ioctl(self, req, arg):
        if req == MP_STREAM_GET_FILENO:
            return -1  # no file descriptor: poll() must ask MP_STREAM_POLL instead
        if req == MP_STREAM_POLL:
            ready = 0
            if arg & select.POLLIN and (self.inbound or self.eof):
                ready |= select.POLLIN
            if arg & select.POLLOUT:
                ready |= select.POLLOUT
            return ready
        return 0

    def close(self):
        self.closed = True


class Clock(MQTTClient):
    # The client on a clock the test moves: keepalive is about time, and tests wait for nobody.
    now = 0

    def _ticks(self):
        return self.now


def connected(wire=None, **kw):
    wire = wire or Wire()
    wire.feed(CONNACK_OK)
    client = Clock("dev-1", **kw)
    client.connect(sock=wire)
    wire.take()
    return client, wire


def expect(actual, wanted):
    assert actual == wanted, f"\n got    {actual!r}\n wanted {wanted!r}"


def case_connect_bytes():
    wire = Wire(b"\x20\x02\x01\x00")
    client = MQTTClient("dev-1", keepalive=5, user="dev-1", password="pw")
    client.set_will("ioc/v1/d/dev-1/death", b'{"r":1}', qos=1, retain=True)
    present = client.connect(sock=wire)
    assert present is True
    body = (
        b"\x00\x04MQTT\x04"
        + bytes([0x80 | 0x40 | 0x20 | 0x08 | 0x04])
        + b"\x00\x05"
        + b"\x00\x05dev-1"
        + b"\x00\x14ioc/v1/d/dev-1/death"
        + b'\x00\x07{"r":1}'
        + b"\x00\x05dev-1"
        + b"\x00\x02pw"
    )
    expect(wire.take(), bytes([0x10, len(body)]) + body)


def case_connect_clean_no_will():
    wire = Wire(CONNACK_OK)
    present = MQTTClient("x", keepalive=0, clean_session=True).connect(sock=wire)
    assert present is False
    expect(wire.take(), b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x01x")


def case_connect_refused():
    wire = Wire(b"\x20\x02\x00\x05")
    try:
        MQTTClient("dev-1").connect(sock=wire)
    except MQTTError as e:
        assert e.code == 5, e.code
        assert wire.closed
        return
    raise AssertionError("a refused CONNECT was accepted")


def case_publish_qos0():
    client, wire = connected()
    client.publish("a/b", b"hi", retain=True)
    expect(wire.take(), b"\x31\x07\x00\x03a/bhi")


def case_publish_qos1_waits_for_its_puback():
    client, wire = connected()
    # A PUBACK for another packet id first: ignored; then the right one ends the wait.
    wire.feed(b"\x40\x02\x00\x09" + b"\x40\x02\x00\x01")
    client.publish("t", b"x" * 200, qos=1)
    sent = wire.take()
    # 2 + 1 topic + 2 packet id + 200 payload = 205 = 0xCD 0x01 as a variable length
    expect(sent[:8], b"\x32\xcd\x01\x00\x01t\x00\x01")
    expect(len(sent), 3 + 205)
    assert not wire.inbound


def case_publish_qos1_timeout():
    wire = Wire(CONNACK_OK)
    client = MQTTClient("dev-1", timeout_ms=50)  # the real clock: this wait is about time
    client.connect(sock=wire)
    try:
        client.publish("t", b"x", qos=1)
    except MQTTError:
        return
    raise AssertionError("publish returned without a PUBACK")


def case_incoming_publish_is_delivered_then_acked():
    got = []
    client, wire = connected()
    client.on_message = lambda topic, payload: got.append((topic, bytes(payload), bytes(wire.out)))
    wire.feed(b"\x32\x0a\x00\x03c/d\x12\x34{}x")
    client.check_msg()
    expect(got, [("c/d", b"{}x", b"")])  # nothing acknowledged before the handler ran
    expect(wire.take(), b"\x40\x02\x12\x34")


def case_short_reads():
    got = []
    wire = Wire(chunk=1)
    client, wire = connected(wire)
    client.on_message = lambda topic, payload: got.append((topic, bytes(payload)))
    wire.feed(b"\x30\x06\x00\x01zabc")
    client.check_msg()
    expect(got, [("z", b"abc")])


def case_oversized_publish_is_skipped_and_acked():
    got = []
    client, wire = connected(max_packet=64)
    client.on_message = lambda topic, payload: got.append(topic)
    big = b"\x00\x03big\x00\x07" + b"y" * 300
    wire.feed(bytes([0x32, len(big) & 0x7F | 0x80, len(big) >> 7]) + big + b"\x30\x04\x00\x01ok")
    client.check_msg()
    expect(got, ["o"])
    expect(client.oversized, 1)
    expect(wire.take(), b"\x40\x02\x00\x07")


def case_subscribe():
    client, wire = connected()
    wire.feed(b"\x90\x03\x00\x01\x01")
    expect(client.subscribe("ioc/v1/d/dev-1/cmd", 1), 1)
    expect(wire.take(), b"\x82\x17\x00\x01\x00\x12ioc/v1/d/dev-1/cmd\x01")
    wire.feed(b"\x90\x03\x00\x02\x80")
    try:
        client.subscribe("nope/#")
    except MQTTError as e:
        expect(e.code, 0x80)
        return
    raise AssertionError("a refused subscription was accepted")


def case_keepalive_ping():
    client, wire = connected(keepalive=4)
    client.now = 2999
    client.check_msg()
    expect(wire.take(), b"")  # not idle long enough (3/4 of the keepalive)
    client.now = 3000
    client.check_msg()
    expect(wire.take(), b"\xc0\x00")
    wire.feed(b"\xd0\x00")
    client.now = 3500
    client.check_msg()
    client.now = 6000  # answered, and quiet again for 3/4 of the keepalive: another ping
    client.check_msg()
    expect(wire.take(), b"\xc0\x00")


def case_keepalive_no_answer():
    client, _ = connected(keepalive=4)
    client.now = 3000
    client.check_msg()
    client.now = 7001
    try:
        client.check_msg()
    except MQTTError:
        return
    raise AssertionError("a silent broker went unnoticed")


def case_closed_by_broker():
    client, wire = connected()
    wire.eof = True
    try:
        client.check_msg()
    except OSError:  # MQTTError is an OSError: one except clause for every broken link
        return
    raise AssertionError("EOF went unnoticed")


def case_disconnect():
    client, wire = connected()
    client.disconnect()
    expect(wire.take(), b"\xe0\x00")
    assert wire.closed and not client.connected


CASES = {name[5:]: f for name, f in globals().items() if name.startswith("case_")}

if sys.argv[2] == "--list":
    print(" ".join(sorted(CASES)))
else:
    CASES[sys.argv[2]]()
    print("ok", sys.argv[2])
