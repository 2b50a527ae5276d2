"""A device-like MQTT client with credentials, for probing what a broker allows."""

import json
import ssl
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt


class ConnectRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Client:
    """Connects (or raises ConnectRefused), records what it receives and whether it was dropped."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None, *,
                 client_id: str | None = None, ca_file: str | None = None,
                 will: tuple[str, bytes] | None = None, clean_session: bool = True) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.suback: list[int] = []
        self.disconnected = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._reason: str | None = None
        # a device's client id is its user name (brokers pin it); anonymous probes get a random one
        client_id = client_id if client_id is not None else (username or f"c-{uuid.uuid4().hex[:8]}")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set_context(ssl.create_default_context(cafile=ca_file))
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload))
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._connected.wait(10):
            self.client.loop_stop()
            raise ConnectRefused(self._reason or "no CONNACK")
        if self._reason is not None:
            self.client.loop_stop()
            raise ConnectRefused(self._reason)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: mqtt.ReasonCode, props: Any) -> None:
        if reason.is_failure:
            self._reason = str(reason)
        self._connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[mqtt.ReasonCode], props: Any) -> None:
        self.suback = [c.value for c in codes]
        self._subscribed.set()

    def subscribe(self, topic: str) -> list[int]:
        """The SUBACK codes: 0/1 granted, 128 refused."""
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        if not self._subscribed.wait(10):
            raise TimeoutError("no SUBACK")
        return self.suback

    def publish(self, topic: str, payload: bytes | str | dict[str, Any], *, retain: bool = False) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
