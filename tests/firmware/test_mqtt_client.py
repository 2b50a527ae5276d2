"""The firmware's MQTT client: framing byte by byte, then against a real Mosquitto."""

import json
from typing import Any

import pytest

from tests.firmware.support import SLOT, run_mp
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe
from tests.support.wait import wait_for

FRAME_CASES = [
    "closed_by_broker",
    "connect_bytes",
    "connect_clean_no_will",
    "connect_refused",
    "disconnect",
    "incoming_publish_is_delivered_then_acked",
    "keepalive_no_answer",
    "keepalive_ping",
    "oversized_publish_is_skipped_and_acked",
    "publish_qos0",
    "publish_qos1_timeout",
    "publish_qos1_waits_for_its_puback",
    "short_reads",
    "subscribe",
]


def test_every_frame_case_is_run_here() -> None:
    listed = run_mp("mp_mqtt_frames.py", str(SLOT), "--list")
    assert listed.stdout.split() == FRAME_CASES


@pytest.mark.parametrize("case", FRAME_CASES)
def test_framing(case: str) -> None:
    result = run_mp("mp_mqtt_frames.py", str(SLOT), case)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"ok {case}"


def broker_case(mosquitto: Mosquitto, prefix: str, case: str) -> dict[str, Any]:
    result = run_mp("mp_mqtt_broker.py", str(SLOT), str(mosquitto.port), prefix, case)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


def test_publish_and_receive_through_mosquitto(mosquitto: Mosquitto, device_id: str) -> None:
    prefix = f"t/{device_id}/"
    probe = Probe(mosquitto.port, prefix + "#")
    try:
        seen = broker_case(mosquitto, prefix, "roundtrip")
        assert seen == {
            "granted": 1,
            "got": [[prefix + "q1", "one"], [prefix + "q0", "zero"], [prefix + "big", 3000]],
        }
        wait_for(lambda: len(probe.messages) == 3, what="the probe to see all three")
        assert [t for t, _, _ in probe.messages] == [prefix + "q1", prefix + "q0", prefix + "big"]
    finally:
        probe.close()


def test_broker_publishes_the_will_when_the_socket_drops(mosquitto: Mosquitto, device_id: str) -> None:
    prefix = f"t/{device_id}/"
    assert broker_case(mosquitto, prefix, "will") == {"closed": True}
    late = Probe(mosquitto.port, prefix + "death")  # subscribes afterwards: the will is retained
    try:
        wait_for(lambda: late.messages, what="the retained will")
        assert late.messages == [(prefix + "death", b'{"reason":"lost"}', True)]
    finally:
        late.close()


def test_clean_disconnect_sends_no_will(mosquitto: Mosquitto, device_id: str) -> None:
    prefix = f"t/{device_id}/"
    assert broker_case(mosquitto, prefix, "clean_disconnect_drops_will") == {"closed": True}
    late = Probe(mosquitto.port, prefix + "death")
    try:
        wait_for(lambda: late.messages, what="the retained death")
        assert late.messages == [(prefix + "death", b'{"reason":"shutdown"}', True)]
    finally:
        late.close()


def test_persistent_session_keeps_commands_for_an_absent_device(mosquitto: Mosquitto, device_id: str) -> None:
    seen = broker_case(mosquitto, f"t/{device_id}/", "session_keeps_messages")
    assert seen == {"first_present": False, "second_present": True, "got": ["while away"]}


def test_keepalive_pings_hold_an_idle_connection(mosquitto: Mosquitto, device_id: str) -> None:
    assert broker_case(mosquitto, f"t/{device_id}/", "keepalive")["pings"] >= 2


def test_refused_connect_carries_the_return_code(mosquitto: Mosquitto, device_id: str) -> None:
    assert broker_case(mosquitto, f"t/{device_id}/", "refused") == {"code": 2}
