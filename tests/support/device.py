"""A scripted device for fleet tests: publishes contract messages with paho, like a device would."""

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt


class ScriptedDevice:
    """Connects as `device_id` with a will for session `ses`; publishes what the test tells it to."""

    def __init__(self, port: int, device_id: str, ses: int, *, will: bool = True) -> None:
        self.device_id = device_id
        self.ses = ses
        self.seq = 0
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"{device_id}-{uuid.uuid4().hex[:6]}")
        if will:
            self.client.will_set(self.topic("death"), json.dumps(
                {"v": 1, "ses": ses, "ts": None, "reason": "lost"}), qos=1, retain=True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(self.topic("cmd"), 1), (self.topic("state/desired"), 1)])
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise TimeoutError("scripted device could not subscribe")

    def topic(self, suffix: str) -> str:
        return f"ioc/v1/d/{self.device_id}/{suffix}"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:  # a retained topic being cleared
            return
        with self._lock:
            self.received.append((msg.topic, json.loads(msg.payload)))

    def raw(self, suffix: str, payload: bytes | str, *, retain: bool = False) -> None:
        self.client.publish(self.topic(suffix), payload, qos=1, retain=retain).wait_for_publish(10)

    def birth(self, **fields: Any) -> None:
        body = {"v": 1, "ses": self.ses, "ts": None, "kind": "pi", "fw": "0.1.0", "roles": ["sim"],
                "boot": {"n": 1, "reason": "start"}, "period_s": 30, **fields}
        self.raw("birth", json.dumps(body), retain=True)

    def death(self, ses: int | None = None, reason: str = "shutdown") -> None:
        body = {"v": 1, "ses": self.ses if ses is None else ses, "ts": None, "reason": reason}
        self.raw("death", json.dumps(body), retain=True)

    def send(self, suffix: str, seq: int | None = None, ses: int | None = None, **fields: Any) -> int:
        """Publish one numbered message; returns its seq."""
        if seq is None:
            seq = self.seq
            self.seq += 1
        body = {"v": 1, "ses": self.ses if ses is None else ses, "seq": seq, "ts": None, **fields}
        self.raw(suffix, json.dumps(body))
        return seq

    def health(self, seq: int | None = None, **fields: Any) -> int:
        return self.send("health", seq, up_s=10, fw="0.1.0", **fields)

    def telemetry(self, seq: int | None = None, ts: int | None = None, **readings: float) -> int:
        if seq is None:
            seq = self.seq
            self.seq += 1
        body = {"v": 1, "ses": self.ses, "seq": seq, "ts": ts, "role": "sim", "r": readings}
        self.raw("telemetry", json.dumps(body))
        return seq

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crashed device would: the broker sends the will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def clear_retained(self) -> None:
        for suffix in ("birth", "death"):
            self.raw(suffix, b"", retain=True)
