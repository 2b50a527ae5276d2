"""The embedded broker drops a client that goes silent with its socket open, after 1.5 × its
keepalive (MQTT 3.1.1 §3.1.2.10), and publishes its will: a device that freezes or loses its link
without a FIN is shown offline by the broker's will, as on Mosquitto. amqtt 0.12 alone never
drops such a client (fleet/broker.py, `_initialize_client_session`). A client that pings stays."""

import socket
import threading
import time
from pathlib import Path

from tests.support.embedded import standalone_embedded_broker
from tests.support.mqtt_client import Client
from tests.support.wait import wait_for

KEEPALIVE_S = 2


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_with_will(port: int, device_id: str, password: str) -> socket.socket:
    """A device's CONNECT (clean session, will on its death topic, keepalive 2 s); the socket after CONNACK 0."""
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # user, password, will retain, will QoS 1, will, clean
    body = (_string("MQTT") + bytes((4, flags)) + KEEPALIVE_S.to_bytes(2, "big") + _string(device_id)
            + _string(f"ioc/v1/d/{device_id}/death") + _string(b'{"v":1,"reason":"lost"}')
            + _string(device_id) + _string(password))
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(bytes((0x10,)) + _length(len(body)) + body)
    assert sock.recv(4) == bytes((0x20, 2, 0, 0)), "CONNACK 0"
    return sock


def closed_by_broker(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def test_a_silent_client_is_dropped_at_one_and_a_half_keepalives_and_its_will_sent(tmp_path: Path) -> None:
    with standalone_embedded_broker(tmp_path) as broker:
        user, password, client_id = broker.fleet_login
        watcher = Client(broker.port, user, password, client_id=client_id)
        stop_pinging = threading.Event()
        try:
            assert watcher.subscribe("ioc/v1/d/+/death") == [1]
            silent = connect_with_will(broker.port, "kp-silent", broker.issue("kp-silent"))
            pinger = connect_with_will(broker.port, "kp-pinger", broker.issue("kp-pinger"))
            silent_since = time.monotonic()

            pongs: list[float] = []

            def ping() -> None:  # a live device: a PINGREQ every second, each answered
                while not stop_pinging.wait(1.0):
                    pinger.sendall(bytes((0xC0, 0)))
                    if pinger.recv(2) != bytes((0xD0, 0)):
                        return
                    pongs.append(time.monotonic())

            threading.Thread(target=ping, daemon=True).start()
            deaths = wait_for(lambda: [t for t, _ in watcher.received if t.endswith("/death")], timeout=30,
                              what="the silent client's will")
            dropped_after = time.monotonic() - silent_since
            assert deaths == ["ioc/v1/d/kp-silent/death"]
            # never before its keepalive had passed (the broker waits 1.5 × K of silence)
            assert dropped_after >= KEEPALIVE_S
            silent.settimeout(10)
            assert closed_by_broker(silent)
            # the pinging client stays connected and answered past 1.5 × K more, and sends no will
            answered = len(pongs)
            wait_for(lambda: len(pongs) >= answered + 3, timeout=30, what="three more pings answered")
            assert [t for t, _ in watcher.received if t.endswith("/death")] == ["ioc/v1/d/kp-silent/death"]
            stop_pinging.set()
            silent.close()
        finally:
            stop_pinging.set()
            watcher.close()
