"""The outbound MQTT endpoint (docs/relay.md, "MQTT endpoints") against a second, real Mosquitto
playing the IOC's broker: dynamic-security accounts and ACLs, a TLS listener, killed and
restarted. Each test starts its own."""

import asyncio
import base64
import json
import os
import secrets
import subprocess
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from standardwebhooks import Webhook

from fleet.ops.webhook_sign import new_secret
from fleet.relay.message import message_id, signed_headers
from fleet.relay.models import DeliveryStatus, EndpointKind, RelayDelivery, RelayEndpoint, RelayRoute
from fleet.relay.mqtt_out import CONNECT_HOLDOFF_S, MqttTransport, TopicError, render_topic
from fleet.relay.transport import Message
from tests.fleet.relay_kit import event as relay_event
from tests.fleet.relay_kit import runtime_of
from tests.support.device import ScriptedDevice
from tests.support.fleet import enroll, fleet_settings, running_fleet
from tests.support.mosquitto import Mosquitto
from tests.support.tls import TlsFiles, make_tls
from tests.support.wait import async_wait_for, wait_for

RELAY = ("ioc-relay", "relay-password-1")
READER = ("ioc-reader", "reader-password-1")
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NOT_AUTHORIZED = 0x87


def _dynsec(broker: Mosquitto, *args: str) -> None:
    subprocess.run(["mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(broker.port), "-u", broker.admin[0],
                    "-P", broker.admin[1], "dynsec", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Ioc:
    broker: Mosquitto
    tls: TlsFiles
    reader: "Reader"


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: dict[str, str]
    content_type: str | None


class Reader:
    """An MQTT 5 subscriber on the IOC broker that keeps what it receives."""

    def __init__(self, port: int) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"reader-{secrets.token_hex(4)}",
                             protocol=mqtt.MQTTv5)
        client.username_pw_set(*READER)
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: subscribed.set()
        client.on_connect = lambda c, *a: c.subscribe("#", qos=1)
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        assert subscribed.wait(10), "the reader could not subscribe"
        self.client = client

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        with self._lock:
            self.received.append(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                                          dict(getattr(props, "UserProperty", []) or []),
                                          getattr(props, "ContentType", None)))

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.topic == topic]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def ioc(tmp_path: Path) -> AsyncIterator[Ioc]:
    tls = make_tls(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "ioc-broker", secure=True, tls=tls)
    broker.start()
    _dynsec(broker, "createRole", "relay")
    _dynsec(broker, "addRoleACL", "relay", "publishClientSend", "ioc/events/#", "allow")
    _dynsec(broker, "createClient", RELAY[0], "-p", RELAY[1])
    _dynsec(broker, "addClientRole", RELAY[0], "relay")
    _dynsec(broker, "createRole", "reader")
    _dynsec(broker, "addRoleACL", "reader", "subscribePattern", "#", "allow")
    _dynsec(broker, "addRoleACL", "reader", "publishClientReceive", "#", "allow")
    _dynsec(broker, "createClient", READER[0], "-p", READER[1])
    _dynsec(broker, "addClientRole", READER[0], "reader")
    reader = Reader(broker.port)
    yield Ioc(broker, tls, reader)
    reader.stop()
    broker.kill()


def endpoint(url: str, *, id: int = 1, password: str = RELAY[1], topic: str | None = None,
             ca_pem: str | None = None, timeout_s: float = 5.0) -> RelayEndpoint:
    row = RelayEndpoint(id=id, name=f"ioc-{id}", kind=EndpointKind.MQTT, url=url, username=RELAY[0],
                        password=password, ca_pem=ca_pem, secret=SECRET, timeout_s=timeout_s)
    if topic is not None:
        row.topic = topic
    return row


def message(device: str = "pi-q1-0007", *, seq: int = 1, type_: str = "motion", ward: str = "ben-nghe",
            phase: str = "start") -> Message:
    body = json.dumps({"type": "device.event", "timestamp": "2026-11-30T16:40:02.345Z",
                       "data": {"device": {"id": device, "ward": ward}, "event": {"type": type_, "phase": phase},
                                "stream": {"epoch": 0, "ses": 1, "seq": seq}}},
                      separators=(",", ":")).encode()
    now = datetime.now(UTC)
    headers = signed_headers(f"msg_{device}_{seq}", int(now.timestamp()), body, secret=SECRET, now=now)
    return Message(body=body, headers=headers, device=device, type=type_, phase=phase, category="security",
                   ward=ward)


def test_topic_template_keeps_each_value_one_safe_level() -> None:
    m = message("a/b", type_="+", ward="", phase="#")
    assert render_topic("ioc/events/{ward}/{device}/{type}/{phase}/{category}", m) == "ioc/events/_/_/_/_/security"
    nul = Message(body=b"{}", headers={}, device="x\0y", type="motion", phase="start", category="c", ward="w")
    assert render_topic("t/{device}", nul) == "t/_"
    for bad in ("t/{nope}", "t/{device!r}", "t/{device:>9}", "t/#", "$SYS/{device}", "t/{", ""):
        with pytest.raises(TopicError):
            render_topic(bad, message())


async def test_messages_arrive_signed_with_qos_1_on_their_topics(ioc: Ioc) -> None:
    transport = MqttTransport()
    ep = endpoint(ioc.broker.url)
    try:
        # many at once on one connection, like the worker's max_in_flight
        msgs = [message(f"pi-{n % 4}", seq=n, type_="motion" if n % 2 else "alarm") for n in range(24)]
        outcomes = await asyncio.gather(*(transport.send(ep, m) for m in msgs))
        assert all(o.ok for o in outcomes), outcomes
        assert transport.connect_attempts == 1
        # a device id with a '/' cannot add a level
        odd = message("evil/+/#", seq=99)
        assert (await transport.send(ep, odd)).ok
    finally:
        await transport.close()
    for m in msgs:
        topic = f"ioc/events/{m.ward}/{m.device}/{m.type}"
        got = wait_for(lambda t=topic, b=m.body: [r for r in ioc.reader.on(t) if r.payload == b],  # type: ignore[misc]
                       what=f"{topic} at the IOC")
        assert len(got) == 1
        r = got[0]
        assert r.qos == 1 and not r.retain
        assert r.content_type == "application/json"
        assert r.user_properties == m.headers
        # what the IOC does: verify with the Standard Webhooks library, id and timestamp from the properties
        Webhook(SECRET).verify(r.payload, r.user_properties)
    assert wait_for(lambda: ioc.reader.on("ioc/events/ben-nghe/_/motion"), what="the odd device's message")


async def test_close_disconnects_cleanly(ioc: Ioc) -> None:
    transport = MqttTransport()
    assert (await transport.send(endpoint(ioc.broker.url, id=42), message())).ok
    await transport.close()
    # Mosquitto writes "disconnected." for a DISCONNECT packet, "closed its connection" for a bare close
    wait_for(lambda: "Client ioc-fleet-relay-42 disconnected." in ioc.broker.log.read_text(errors="replace"),
             what="a clean DISCONNECT in the broker's log")


async def test_a_wrong_password_is_the_connack_reason_and_attempts_are_held_off(ioc: Ioc) -> None:
    transport = MqttTransport(connect_holdoff_s=3600)
    try:
        first = await transport.send(endpoint(ioc.broker.url, password="wrong"), message())
        # Mosquitto's dynamic security answers a wrong password with 0x87 Not authorized (not 0x86)
        assert not first.ok and first.status == NOT_AUTHORIZED, first
        assert "refused the connection" in (first.error or "") and "wrong" not in (first.error or "")
        again = await transport.send(endpoint(ioc.broker.url, password="wrong"), message(seq=2))
        assert again == first and transport.connect_attempts == 1  # within the hold-off: no new attempt
        # the endpoint's password corrected: a new fingerprint, connected at once despite the hold-off
        fixed = await transport.send(endpoint(ioc.broker.url), message(seq=3))
        assert fixed.ok and transport.connect_attempts == 2
    finally:
        await transport.close()


async def test_an_acl_denial_is_puback_0x87_and_the_connection_stays(ioc: Ioc) -> None:
    transport = MqttTransport()
    try:
        denied = await transport.send(endpoint(ioc.broker.url, topic="elsewhere/{device}"), message())
        assert not denied.ok and denied.status == NOT_AUTHORIZED, denied
        assert "Not authorized" in (denied.error or "")
        assert (await transport.send(endpoint(ioc.broker.url), message(seq=2))).ok
        assert transport.connect_attempts == 1
    finally:
        await transport.close()
    assert not ioc.reader.on("elsewhere/pi-q1-0007")


async def test_broker_killed_fails_within_the_timeout_then_the_next_send_reconnects(ioc: Ioc) -> None:
    transport = MqttTransport()
    ep = endpoint(ioc.broker.url, timeout_s=3.0)
    try:
        assert (await transport.send(ep, message(seq=1))).ok
        ioc.reader.stop()
        ioc.broker.kill()
        lost = await asyncio.wait_for(transport.send(ep, message(seq=2)), ep.timeout_s + 2)
        assert not lost.ok and lost.status is None, lost
        # either the loss was seen first and that send made one attempt (refused), or the send
        # went out on the dying connection and failed with it
        attempts = transport.connect_attempts
        assert attempts in (1, 2)
        ioc.broker.start()
        ioc.reader = Reader(ioc.broker.port)
        await asyncio.sleep(CONNECT_HOLDOFF_S)  # the hold-off after the refused attempt
        back = await transport.send(ep, message(seq=3))
        assert back.ok, back
        assert transport.connect_attempts == attempts + 1
    finally:
        await transport.close()
    wait_for(lambda: ioc.reader.on("ioc/events/ben-nghe/pi-q1-0007/motion"), what="the message after the restart")


async def test_a_broker_that_stops_answering_fails_the_send_at_timeout_s(ioc: Ioc) -> None:
    transport = MqttTransport()
    ep = endpoint(ioc.broker.url, timeout_s=1.0)
    try:
        assert (await transport.send(ep, message(seq=1))).ok
        assert ioc.broker.proc is not None
        os.kill(ioc.broker.proc.pid, 19)  # SIGSTOP: the socket stays open, nothing answers
        try:
            stuck = await asyncio.wait_for(transport.send(ep, message(seq=2)), 10)
            assert not stuck.ok and "PUBACK" in (stuck.error or ""), stuck
            # the connection is given up: the next send tries a new one (that cannot answer either)
            again = await asyncio.wait_for(transport.send(ep, message(seq=3)), 10)
            assert not again.ok and transport.connect_attempts == 2, again
        finally:
            os.kill(ioc.broker.proc.pid, 18)  # SIGCONT
    finally:
        await transport.close()


async def test_tls_with_the_endpoints_ca_and_a_wrong_ca_refused(ioc: Ioc, tmp_path: Path) -> None:
    url = f"mqtts://127.0.0.1:{ioc.broker.tls_port}"
    transport = MqttTransport()
    try:
        good = await transport.send(endpoint(url, ca_pem=ioc.tls.ca.read_text()), message(seq=1))
        assert good.ok, good
        other_ca = make_tls(tmp_path / "other").ca.read_text()
        bad = await transport.send(endpoint(url, id=2, ca_pem=other_ca), message(seq=2))
        assert not bad.ok and bad.status is None and "certificate" in (bad.error or ""), bad
        # without a CA of its own the system's CAs are used, which do not know the test CA either
        system = await transport.send(endpoint(url, id=3), message(seq=3))
        assert not system.ok and "certificate" in (system.error or ""), system
    finally:
        await transport.close()
    assert len(wait_for(lambda: ioc.reader.on("ioc/events/ben-nghe/pi-q1-0007/motion"), what="the TLS message")) == 1


async def test_end_to_end_a_device_event_reaches_the_ioc_broker(ioc: Ioc, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The real fleet (its own Mosquitto, SQLite) with a kind=mqtt endpoint and a route: an event a
    device publishes is relayed by the delivery worker onto the IOC broker, signed."""
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", mosquitto.url,
                              snapshot_dir=tmp_path / "snapshots")
    async with running_fleet(settings) as http:
        secret = new_secret()
        ep = await RelayEndpoint.create(name="ioc-mqtt", kind=EndpointKind.MQTT, url=ioc.broker.url,
                                        username=RELAY[0], password=RELAY[1], secret=secret)
        await RelayRoute.create(name="security-to-ioc", endpoint=ep, categories=["security"])
        relay = runtime_of(http).relay
        assert relay is not None
        await relay.routes_changed()
        await enroll(http, "pi-e2e-1", "pi", "ben-nghe")
        device = ScriptedDevice(mosquitto.port, "pi-e2e-1", ses=1764520000, will=False)
        try:
            seqs = [relay_event(device, data={"camera": "cam1", "i": i}) for i in range(3)]
            relay_event(device, category="other")  # no route: stays home
            topic = "ioc/events/ben-nghe/pi-e2e-1/motion"
            async def arrived() -> list[Received] | None:  # async: the fleet runs in this loop
                return ioc.reader.on(topic) if len(ioc.reader.on(topic)) >= 3 else None
            got = await async_wait_for(arrived, timeout=30, what="the relayed events on the IOC broker")
            assert got is not None
        finally:
            device.close()
        assert [json.loads(r.payload)["data"]["stream"]["seq"] for r in got] == seqs  # in order
        for r in got:
            Webhook(secret).verify(r.payload, r.user_properties)
            stream = json.loads(r.payload)["data"]["stream"]
            assert r.user_properties["webhook-id"] == message_id("pi-e2e-1", stream["epoch"], stream["ses"],
                                                                 stream["seq"])
            assert r.qos == 1 and not r.retain and r.content_type == "application/json"

        async def delivered() -> list[Any] | None:
            rows = await RelayDelivery.filter(endpoint_id=ep.id).values_list("status", "last_status")
            return rows if rows and all(s == DeliveryStatus.DELIVERED for s, _ in rows) else None
        rows = await async_wait_for(delivered, what="the deliveries recorded as delivered")
        assert rows is not None and len(rows) == 3
    assert len(ioc.reader.on(topic)) == 3 and not [r for r in ioc.reader.received if r.topic != topic]
