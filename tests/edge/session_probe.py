"""An MQTT observer that survives a broker restart: persistent session, reconnecting.

tests.support.mqtt_probe.Probe uses a clean session, so a broker restart loses its
subscription and whatever was published meanwhile. This one connects with clean_session=False
and a fixed client id, so Mosquitto (with persistence on) keeps its subscription and queues
QoS 1 messages for it while it is away; paho reconnects it by itself.
"""

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt


class SessionProbe:
    def __init__(self, port: int, topic_filter: str) -> None:
        self.topic_filter = topic_filter
        self.messages: list[tuple[str, bytes]] = []
        self.connects = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"session-probe-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("session probe could not subscribe")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        with self._lock:
            self.connects += 1
        # Harmless when the session kept the subscription; needed if the broker lost it.
        client.subscribe(self.topic_filter, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def numbered(self) -> list[tuple[str, dict[str, Any]]]:
        """(topic suffix, payload) of every message carrying a (ses, seq) stamp, in arrival order."""
        with self._lock:
            received = list(self.messages)
        out = []
        for topic, payload in received:
            body = json.loads(payload) if payload else {}
            if "seq" in body:
                out.append((topic.split("/", 4)[4], body))
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
