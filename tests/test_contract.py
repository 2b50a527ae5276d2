"""The CPython side of the contract against its example messages and rule vectors."""

import json

import pytest

from contract import (
    ContractError,
    is_command_name,
    make_command,
    make_desired,
    parse_downstream,
    parse_upstream,
    split_topic,
)
from contract.examples import invalid_cases, payload_bytes, rule_cases, valid_examples
from fleet.ingest.presence import Presence
from fleet.ingest.sequence import StreamState, Verdict

EXAMPLES = valid_examples()
DOWN = {"cmd", "state_desired"}
RETAINED = {"birth", "death", "state_desired"}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_follows_the_contract(name: str) -> None:
    example = EXAMPLES[name]
    payload = json.dumps(example["payload"]).encode()
    kind = name.split(".")[0]
    if kind in DOWN:
        assert split_topic(example["topic"], upstream=False)[1] == kind
        assert parse_downstream(kind, payload)["v"] == 1
    else:
        message = parse_upstream(example["topic"], payload)
        assert message.kind == kind
        assert message.topic == example["topic"]
        assert message.ses == example["payload"]["ses"]
        assert (message.seq is None) == (kind in {"birth", "death"})
    assert example["qos"] == 1
    assert example["retain"] == (kind in RETAINED)


def test_examples_cover_every_message_kind() -> None:
    kinds = {name.split(".")[0] for name in EXAMPLES}
    assert kinds == {"birth", "death", "health", "telemetry", "event", "cmd", "cmd_result",
                     "state_desired", "state_reported", "ota_progress", "child_birth", "child_health",
                     "child_death"}


def test_the_fleet_can_build_every_command_example() -> None:
    """Dotted role commands included: the API sends through make_command."""
    for name, example in EXAMPLES.items():
        if name.split(".")[0] != "cmd":
            continue
        body = example["payload"]
        device_id = example["topic"].split("/")[3]
        topic, payload = make_command(device_id, body["id"], body["name"], body["args"], body["exp"])
        assert topic == example["topic"] and json.loads(payload) == body


@pytest.mark.parametrize("case", invalid_cases(), ids=lambda c: c["name"])
def test_invalid_messages_are_refused_with_their_reason(case: dict) -> None:
    with pytest.raises(ContractError) as err:
        parse_upstream(case["topic"], payload_bytes(case))
    assert err.value.reason == case["reason"]
    assert str(err.value)


@pytest.mark.parametrize("case", rule_cases("presence"), ids=lambda c: c["name"])
def test_presence_rule(case: dict) -> None:
    presence = Presence()
    for step in case["steps"]:
        if step["kind"] == "birth":
            # births with the same ses, ts and boot count are the same birth (a redelivery or replay)
            body = {"ses": step["ses"], "ts": step.get("ts"), "boot": {"n": step.get("boot", 1)}}
            presence.birth(step["ses"], retained=step.get("retained", False), body=body)
        else:
            presence.death(step["ses"])
    assert (presence.online, presence.session) == (case["online"], case["session"])
    assert presence.epoch == case.get("epoch", 0)


@pytest.mark.parametrize("case", rule_cases("streams"), ids=lambda c: c["name"])
def test_stream_rule(case: dict) -> None:
    stream = StreamState()
    verdicts = []
    for step in case["steps"]:
        if "next_seq" in step:
            stream.start_at(step["next_seq"])
        elif "end" in step:  # a later birth's prev: {"ses": this stream, "next_seq": end}
            stream.end_at(step["end"])
        else:
            verdicts.append(stream.accept(step["seq"]))
    assert [[g.first, g.last] for g in stream.gaps] == case["gaps"]
    assert verdicts.count(Verdict.DUPLICATE) == case["duplicates"]
    assert verdicts.count(Verdict.LATE) == case["late"]


def test_refusals_never_repeat_what_the_device_sent() -> None:
    secret = "<script>alert(1)</script>"
    for topic, body in [
        ("ioc/v1/d/pi-dx-0001/telemetry", {"v": 1, "ses": 1, "seq": 1, "ts": None, "role": secret, "r": {"x": 1}}),
        ("ioc/v1/d/pi-dx-0001/health", {"v": secret, "ses": 1, "seq": 1, "ts": None, "up_s": 1, "fw": "x"}),
        (f"ioc/v1/d/pi-dx-0001/{secret}", {"v": 1}),
        ("ioc/v1/d/pi-dx-0001/event", {"v": 1, "ses": 1, "seq": 1, "ts": None, "id": "e", "type": "t",
                                       "phase": secret, "category": "other", "data": {}}),
    ]:
        with pytest.raises(ContractError) as err:
            parse_upstream(topic, json.dumps(body).encode())
        assert "script" not in str(err.value)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    data: dict = {}
    for _ in range(14):  # payload object > data > 14 more levels = 16
        data = {"d": data}
    body = {"v": 1, "ses": 1, "seq": 1, "ts": None, "id": "e", "type": "t", "phase": "once",
            "category": "other", "data": data}
    parse_upstream("ioc/v1/d/pi-dx-0001/event", json.dumps(body).encode())
    with pytest.raises(ContractError) as err:
        parse_upstream("ioc/v1/d/pi-dx-0001/event", json.dumps({**body, "data": {"d": data}}).encode())
    assert err.value.reason == "invalid" and "nested" in str(err.value)


def test_brackets_and_surrogate_pairs_inside_text_are_fine() -> None:
    body = {"v": 1, "ses": 1, "seq": 1, "ts": None, "id": "[" * 100 + "{" * 100, "type": "t", "phase": "once",
            "category": "other", "data": {"emoji": "\U0001f6a6", "escaped": "\\ud800 is text here"}}
    assert parse_upstream("ioc/v1/d/pi-dx-0001/event", json.dumps(body).encode()).body == body


def _nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "\ud800", "a\x00b", _nested(16), 2**53,
                                 [-(2**53)], 2**64],
                         ids=["nan", "inf", "-inf", "surrogate", "nul", "deep", "2^53", "-2^53", "2^64"])
def test_the_fleet_never_sends_what_a_strict_reader_would_refuse(bad: object) -> None:
    with pytest.raises(ContractError) as err:
        make_command("pi-dx-0001", "c1", "ping", {"x": bad}, 1)
    assert err.value.reason == "invalid"
    with pytest.raises(ContractError):
        make_desired("pi-dx-0001", 1, {"x": bad})


def test_integers_just_inside_the_limit_are_sent() -> None:
    assert b"9007199254740991" in make_command("pi-dx-0001", "c1", "ping", {"x": [2**53 - 1, 1 - 2**53]}, 1)[1]


@pytest.mark.parametrize("name", ["ping", "set_health_period", "speaker.clip_fetch", "light.override", "sim.spike"])
def test_command_names_the_contract_defines(name: str) -> None:
    assert is_command_name(name)


@pytest.mark.parametrize("name", ["", "Ping", "a.b.c", ".x", "x.", "light-override", "x" * 33, "a." + "b" * 32])
def test_command_names_the_contract_refuses(name: str) -> None:
    assert not is_command_name(name)
    with pytest.raises(ContractError):
        make_command("pi-dx-0001", "c1", name, {}, 1)


def test_downstream_parser_refuses_deep_and_non_finite_payloads_with_contract_errors() -> None:
    for payload in (b"[" * 5000, b'{"v":1,"id":"c","name":"ping","args":{"x":NaN},"exp":1}'):
        with pytest.raises(ContractError):
            parse_downstream("cmd", payload)


@pytest.mark.parametrize("case", rule_cases("series"), ids=lambda c: c["name"][:40])
def test_compressed_series_rule(case: dict) -> None:
    """docs/protocol.md, "Compressed series": linear interpolation between a reading's points."""
    from contract.series import interpolate

    if "values" in case:
        assert interpolate([tuple(p) for p in case["points"]], case["times"]) == case["values"]
        return
    points = []
    for message in case["messages"]:
        parsed = parse_upstream(message["topic"], json.dumps(message["payload"]).encode())
        assert parsed.kind == "telemetry" and parsed.body["at_ms"] <= parsed.body["ts"]
        points.append((parsed.body["at_ms"], parsed.body["r"][case["reading"]]))
    rebuilt = interpolate(points, [t for t, _ in case["samples"]])
    samples = [v for _, v in case["samples"]]
    assert all(r is not None and abs(r - v) <= case["max_error"] for v, r in zip(samples, rebuilt, strict=True))
