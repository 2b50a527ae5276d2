"""benchmarks/loadgen.py speaks the contract and reaches a real broker: every message it makes
passes the fleet's own check (`contract.parse_upstream`), and a small run of each connection mode
arrives at a private Mosquitto, each device's stream whole and in order (birth, seq 0…n-1, death
or will), as a bare C subscriber (`mosquitto_sub`) receives it."""

import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from benchmarks import loadgen
from contract import parse_upstream
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for


def spec(port: int, **changes: object) -> loadgen.LoadSpec:
    return loadgen.LoadSpec(**{"port": port, "devices": 6, "messages": 90, "processes": 2, "connections": 2,
                               "mix": {"telemetry": 3, "health": 2, "event": 1}, "prev_next_seq": 4, **changes})


def test_every_message_passes_the_contract_check() -> None:
    s = spec(0, deaths="will")
    plans = loadgen.plan(s)
    assert sum(len(p.kinds) for p in plans) == 90 and {k for p in plans for k in p.kinds} == set(loadgen.KINDS)
    messages = list(loadgen.interleaved(s, plans))
    messages += [(f"ioc/v1/d/{p.device_id}/death".encode(), loadgen.death_payload(p.ses, r), True)
                 for p in plans for r in ("lost", "shutdown")]
    for topic, payload, _ in messages:
        parsed = parse_upstream(topic.decode(), payload)
        if parsed.kind == "birth":
            assert parsed.body["next_seq"] == 0 and parsed.body["prev"] == {"ses": s.ses - 1, "next_seq": 4}
    kinds = {parse_upstream(t.decode(), p).kind for t, p, _ in messages}
    assert kinds == {"birth", "death", *loadgen.KINDS}


@pytest.mark.parametrize("per_device", [False, True], ids=["multiplexed", "per-device"])
def test_a_small_run_reaches_mosquitto_whole_and_in_order(mosquitto: Mosquitto, tmp_path: Path,
                                                          per_device: bool) -> None:
    s = spec(mosquitto.port, per_device=per_device, deaths="will" if per_device else "shutdown")
    out = tmp_path / "sub.out"
    with out.open("wb") as sink:
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(mosquitto.port), "-q", "1", "-t", "ioc/v1/d/+/#",
                                "-F", "%r %t %p"], stdout=sink)
        try:
            subscribed(mosquitto.port, out)
            result = loadgen.run(s)
            wait_for(lambda: len(received(out)) >= loadgen.expected_total(s), timeout=30, what="every message")
        finally:
            sub.terminate()
            sub.wait(10)
    lines = received(out)
    assert len(lines) == loadgen.expected_total(s)
    # every PUBLISH the generator sent was acknowledged (a will is the broker's, not the generator's)
    assert result.published == s.messages + s.devices * (1 if per_device else 2)
    streams: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
    for flag, topic, payload in lines:
        msg = parse_upstream(topic.decode(), payload)
        assert flag == b"0"  # delivered live, not a retained replay
        streams[msg.device_id].append((msg.kind, msg.seq))
        if msg.kind == "death":
            assert msg.body["reason"] == ("lost" if per_device else "shutdown")
    assert len(streams) == s.devices
    for device in loadgen.plan(s):
        got = streams[device.device_id]
        assert got[0] == ("birth", None) and got[-1] == ("death", None)
        assert got[1:-1] == [(kind, seq) for seq, kind in enumerate(device.kinds)]


PROBE_TOPIC = "ioc/v1/d/probe-0/health"


def received(out: Path) -> list[list[bytes]]:
    """The subscriber's lines (retained flag, topic, payload), its probes left out."""
    lines = [line.split(b" ", 2) for line in out.read_bytes().splitlines()]
    return [line for line in lines if line[1] != PROBE_TOPIC.encode()]


def subscribed(port: int, out: Path) -> None:
    """Publish a probe until the subscriber has printed one: its subscription stands."""
    def probe() -> bool:
        subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", PROBE_TOPIC,
                        "-m", '{"v":1,"ses":1,"seq":0,"ts":null,"up_s":1,"fw":"0.1.0"}'], check=True)
        return bool(out.read_bytes())
    wait_for(probe, timeout=20, interval=0.1, what="mosquitto_sub subscribed")
