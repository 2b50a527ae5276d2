# The MQTT client against a real broker, under the real MicroPython:
#   micropython mp_mqtt_broker.py <slot folder> <port> <topic prefix> <case>
# Prints one JSON line with what the case saw; the pytest side checks it (and what the broker
# did, through its own observer).
import json
import sys
import time

sys.path.insert(0, sys.argv[1])
from mqtt import MQTTClient, MQTTError

PORT = int(sys.argv[2])
PREFIX = sys.argv[3]
DEADLINE_MS = 10000


def client(cid, **kw):
    return MQTTClient(cid, "127.0.0.1", PORT, **kw)


def pump(c, until):
    # Handle traffic until until() holds; bounded by DEADLINE_MS.
    start = time.ticks_ms()
    while not until():
        if time.ticks_diff(time.ticks_ms(), start) > DEADLINE_MS:
            raise AssertionError("timed out")
        c.check_msg(50)


def case_roundtrip():
    got = []
    c = client(PREFIX.replace("/", "-") + "rt")
    c.on_message = lambda t, p: got.append([t, bytes(p).decode()])
    c.connect()
    granted = c.subscribe(PREFIX + "#", 1)
    c.publish(PREFIX + "q1", b"one", qos=1)
    c.publish(PREFIX + "q0", "zero")
    c.publish(PREFIX + "big", b"z" * 3000, qos=1)
    pump(c, lambda: len(got) == 3)
    c.disconnect()
    got[2][1] = len(got[2][1])
    return {"granted": granted, "got": got}


def case_will():
    c = client(PREFIX.replace("/", "-") + "will", keepalive=5)
    c.set_will(PREFIX + "death", b'{"reason":"lost"}', qos=1, retain=True)
    c.connect()
    c.close()  # the socket goes away without DISCONNECT: the broker must publish the will
    return {"closed": True}


def case_clean_disconnect_drops_will():
    c = client(PREFIX.replace("/", "-") + "clean", keepalive=5)
    c.set_will(PREFIX + "death", b'{"reason":"lost"}', qos=1, retain=True)
    c.connect()
    c.publish(PREFIX + "death", b'{"reason":"shutdown"}', qos=1, retain=True)
    c.disconnect()
    return {"closed": True}


def case_session_keeps_messages():
    # clean_session=False: what is published to a subscribed, offline device waits for it.
    cid = PREFIX.replace("/", "-") + "sess"
    got = []
    c = client(cid)
    first = c.connect()
    c.subscribe(PREFIX + "cmd", 1)
    c.disconnect()
    other = client(cid + "-fleet")
    other.connect()
    other.publish(PREFIX + "cmd", b"while away", qos=1)
    other.disconnect()
    c = client(cid)
    c.on_message = lambda t, p: got.append(bytes(p).decode())
    second = c.connect()
    pump(c, lambda: got)
    c.disconnect()
    return {"first_present": first, "second_present": second, "got": got}


def case_keepalive():
    # Idle on a 2 s keepalive: the client's pings keep the broker from dropping it.
    c = client(PREFIX.replace("/", "-") + "ka", keepalive=2)
    c.connect()
    pings = []
    real_ping = c.ping

    def counting_ping():
        pings.append(time.ticks_ms())
        real_ping()

    c.ping = counting_ping
    pump(c, lambda: len(pings) >= 2 and c._ping_sent is None)
    c.publish(PREFIX + "alive", b"1", qos=1)  # still connected: the broker acknowledges
    c.disconnect()
    return {"pings": len(pings)}


def case_refused():
    try:
        client("", clean_session=False).connect()  # 3.1.1: an empty id needs a clean session
    except MQTTError as e:
        return {"code": e.code}
    return {"code": None}


print(json.dumps(globals()["case_" + sys.argv[4]]()))
