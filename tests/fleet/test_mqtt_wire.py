"""The fleet's own MQTT framing (fleet/ingest/mqtt_wire.py) and its link's backpressure and acks
against a real Mosquitto (fleet/ingest/link.py)."""

import json
import uuid
from pathlib import Path

import pytest

from fleet.ingest import mqtt_wire as wire
from fleet.ingest.link import LinkError, MqttLink, RawMessage
from fleet.settings import MqttTarget, parse_hosts
from tests.support.device import ScriptedDevice
from tests.support.mosquitto import Mosquitto
from tests.support.wait import async_wait_for


def _publish_body(topic: bytes, payload: bytes, *, packet_id: int | None, props: bytes | None) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if packet_id is not None:
        body += packet_id.to_bytes(2, "big")
    if props is not None:
        body += wire.varint(len(props)) + props
    return body + payload


def test_packets_split_across_reads_of_any_size_come_out_whole() -> None:
    payloads = [b"x" * n for n in (0, 1, 120, 127, 128, 16_383, 16_384, 70_000)]
    stream = b"".join(wire.publish(f"t/{i}", p, packet_id=i + 1, retain=bool(i % 2), level=5)
                      for i, p in enumerate(payloads))
    for step in (1, 7, 4096, len(stream)):
        decoder = wire.Decoder()
        got = []
        for start in range(0, len(stream), step):
            decoder.feed(stream[start:start + step])
            while (packet := decoder.next()) is not None:
                got.append(packet)
        assert decoder.buffered() == 0
        parsed = [(wire.split_publish(first, body, 5), bool(first & 1)) for first, body in got]
        assert parsed == [((f"t/{i}", i + 1, p), bool(i % 2)) for i, p in enumerate(payloads)]


@pytest.mark.parametrize("level", [4, 5])
def test_a_publish_gives_its_topic_packet_id_and_payload_at_either_protocol_level(level: int) -> None:
    props = b"\x01\x01" + b"\x23\x00\x05" + b"\x26\x00\x01k\x00\x01v" if level == 5 else None
    qos1 = _publish_body(b"ioc/v1/d/a/telemetry", b'{"v":1}', packet_id=513, props=props)
    assert wire.split_publish(0x32, qos1, level) == ("ioc/v1/d/a/telemetry", 513, b'{"v":1}')
    qos0 = _publish_body(b"a/b", b"", packet_id=None, props=b"" if level == 5 else None)
    assert wire.split_publish(0x30, qos0, level) == ("a/b", 0, b"")
    bad = _publish_body(b"\xff\xfe", b"p", packet_id=1, props=b"" if level == 5 else None)
    assert wire.split_publish(0x32, bad, level) == (wire.NOT_UTF8, 1, b"p")


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x05ab", b"\x00\x01a\x00"])
def test_a_truncated_publish_is_a_wire_error(body: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.split_publish(0x32, body, 5)


def test_acknowledgements_and_refusals_are_read_with_their_properties() -> None:
    connack = wire.parse_ack(0x20, b"\x01\x00" + wire.varint(3 + 8) + b"\x21\x00\x14" + b"\x1f\x00\x05hello", 5)
    assert connack.connack == wire.Connack(session_present=True, code=0, receive_max=20, reason="hello")
    refused = wire.parse_ack(0x20, b"\x00\x86\x00", 5)
    assert refused.connack is not None and refused.connack.code == 0x86
    assert wire.reason_text(0x86, 5) == "bad user name or password (0x86)"
    assert wire.reason_text(5, 4) == "not authorized (5)"
    assert wire.parse_ack(0x20, b"\x00\x00", 4).connack == wire.Connack(False, 0, 65_535, None)
    assert wire.parse_ack(0x90, b"\x00\x07\x00\x01\x87", 5).codes == (1, 0x87)
    assert wire.parse_ack(0x90, b"\x00\x07\x80", 4).codes == (0x80,)
    assert wire.parse_ack(0x40, b"\x01\x02", 5) == wire.Ack(wire.PUBACK, 258, (0,))
    assert wire.parse_ack(0x40, b"\x01\x02\x87\x00", 5).codes == (0x87,)
    for first, body in [(0x20, b"\x00"), (0x90, b"\x00"), (0x50, b"\x00\x01"), (0x20, b"\x00\x00\x05\x99\x00")]:
        with pytest.raises(wire.WireError):
            wire.parse_ack(first, body, 5)


def test_a_bad_or_oversized_remaining_length_is_a_wire_error() -> None:
    decoder = wire.Decoder(packet_max=1000)
    decoder.feed(b"\x30\xe9\x07")  # 1001 bytes
    with pytest.raises(wire.WireError):
        decoder.next()
    decoder = wire.Decoder()
    decoder.feed(b"\x30\xff\xff\xff\xff\x01")  # five length bytes
    with pytest.raises(wire.WireError):
        decoder.next()


def test_what_the_fleet_sends_is_framed_as_mqtt_says() -> None:
    assert wire.puback(258) == b"\x40\x02\x01\x02"
    connect = wire.connect("fleet", level=5, keepalive=30, clean=False, username="u", password="p",
                           session_expiry_s=600, receive_max=5000)
    assert connect == (b"\x10" + wire.varint(len(connect) - 2) + b"\x00\x04MQTT\x05\xc0\x00\x1e"
                       + b"\x08\x11\x00\x00\x02\x58\x21\x13\x88" + b"\x00\x05fleet\x00\x01u\x00\x01p")
    assert wire.connect("f", level=4, keepalive=30, clean=False)[2:] == b"\x00\x04MQTT\x04\x00\x00\x1e\x00\x01f"
    assert wire.subscribe(3, [("a/#", 1)], level=5) == b"\x82\x09\x00\x03\x00\x00\x03a/#\x01"
    assert wire.publish("a", b"p", packet_id=9, retain=True, level=4) == b"\x33\x06\x00\x01a\x00\x09p"


async def test_a_full_queue_stops_reading_and_every_message_comes_in_order_then_is_acknowledged(
        keeping_broker: Mosquitto) -> None:
    """queue_max 8 against 200 messages waiting in the fleet's session: the queue never holds more
    than 8, all 200 come in the order sent, and once acknowledged none comes again."""
    client_id = f"fleet-bp-{uuid.uuid4().hex[:6]}"
    target = MqttTarget(keeping_broker.url)
    async with MqttLink(target, client_id=client_id, queue_max=8):  # the session is made
        pass
    device = ScriptedDevice(keeping_broker.port, f"t-bp-{uuid.uuid4().hex[:6]}", ses=3, will=False)
    try:
        for seq in range(200):
            device.telemetry(seq, lux=1.0)
        async with MqttLink(target, client_id=client_id, queue_max=8) as link:
            async def full() -> bool:
                return link.depth() == 8

            await async_wait_for(full, timeout=30, what="a full queue")
            taken: list[RawMessage] = []
            while len(taken) < 200:
                batch = await link.take(5, 0.05, first_within=10)
                assert batch and link.depth() <= 8
                link.ack(batch)
                taken += batch
            assert [json.loads(m.payload)["seq"] for m in taken] == list(range(200))
            assert link.acked == 200 and link.ack_skipped == 0
        async with MqttLink(target, client_id=client_id, queue_max=8) as link:
            device.telemetry(200, lux=2.0)
            [last] = await link.take(10, 0.5, first_within=10)
            assert json.loads(last.payload)["seq"] == 200  # nothing acknowledged came a second time
            assert (await link.take(10, 0.2, first_within=0.5)) == []
            await link.publish(f"ioc/v1/d/{device.device_id}/cmd", b"{}")  # its own publish: PUBACK awaited
    finally:
        device.close()


async def test_a_broker_that_refuses_the_fleet_stops_its_start(tmp_path: Path) -> None:
    mosquitto = Mosquitto(tmp_path / "mosquitto", secure=True)
    mosquitto.start()
    try:
        target = MqttTarget(mosquitto.url.replace("mqtt://", "mqtt://nobody:wrong@"))
        with pytest.raises(LinkError, match=r"refused the fleet: (bad user name or password|not authorized)"):
            async with MqttLink(target, client_id="fleet-refused", queue_max=8):
                pytest.fail("connected with a wrong password")
    finally:
        mosquitto.kill()


async def test_a_lost_broker_node_sends_the_link_to_the_next_address(tmp_path: Path) -> None:
    """FLEET_MQTT_OTHER_HOSTS: two brokers stand for two nodes of a cluster; the first dies, the
    link's next attempt goes to the second, where it subscribes and receives."""
    first, second = Mosquitto(tmp_path / "a"), Mosquitto(tmp_path / "b")
    first.start()
    second.start()
    try:
        other = parse_hosts(f"127.0.0.1:{second.port}", 1883)
        async with MqttLink(MqttTarget(first.url), client_id=f"fleet-nodes-{uuid.uuid4().hex[:6]}", queue_max=8,
                            other_hosts=other) as link:
            assert link.state().connected
            first.kill()

            async def lost() -> bool:
                return not link.state().connected

            async def subscribed_again() -> bool:
                return link.state().subscribed

            await async_wait_for(lost, timeout=30, what="the first broker's connection gone")

            await async_wait_for(subscribed_again, timeout=30, what="the link on the second broker")
            device = ScriptedDevice(second.port, f"t-nodes-{uuid.uuid4().hex[:6]}", ses=1, will=False)
            try:
                device.telemetry(0, lux=1.0)
                [message] = await link.take(10, 0.2, first_within=10)
                assert message.topic == device.topic("telemetry")
                link.ack([message])
            finally:
                device.close()
    finally:
        first.kill()
        second.kill()


def test_other_hosts_are_host_or_host_and_port() -> None:
    assert parse_hosts(" n2, n3:1884 ,,10.0.0.4", 8883) == [("n2", 8883), ("n3", 1884), ("10.0.0.4", 8883)]
    for bad in ("n2:", "n2:0", "n2:70000", ":1883", "n 2", "n2:x"):
        with pytest.raises(ValueError, match="FLEET_MQTT_OTHER_HOSTS"):
            parse_hosts(bad, 1883)
