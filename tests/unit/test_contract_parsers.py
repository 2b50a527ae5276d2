"""The contract's parsers (contract/), directly: what they accept comes back unchanged, and what they
refuse is refused for the field that is wrong, by name, without repeating the value.

Beside these: tests/test_contract.py runs the normative vectors, tests/fleet/test_ingest_fuzz.py
throws arbitrary bytes and JSON at the parsers (only ContractError may come out).
"""

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract import (
    ContractError,
    child_topic,
    device_topic,
    is_command_name,
    is_fleet_publish,
    is_role_name,
    make_command,
    make_desired,
    parse_downstream,
    parse_topic,
    parse_upstream,
    split_topic,
)
from contract.examples import valid_examples
from contract.messages import DOWN_LIMITS, MAX_INT, SCHEMAS
from contract.names import COMMAND_NAME_MAX, ROLE_NAME_PATTERN
from contract.topics import CHILD_KINDS, DEVICE_ID_PATTERN, DOWNSTREAM_KINDS, UPSTREAM_KINDS

EXAMPLES = valid_examples()
UPSTREAM = {name: e for name, e in EXAMPLES.items() if name.split(".")[0] not in ("cmd", "state_desired")}
device_ids = st.from_regex(DEVICE_ID_PATTERN, fullmatch=True)
counts = st.integers(min_value=0, max_value=MAX_INT - 1)
# finite JSON values, as a device or the fleet may send them (no lone surrogate, no NUL)
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-MAX_INT + 1, max_value=MAX_INT - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def _payload(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


# -- topics --------------------------------------------------------------------------------------

@given(device_ids, st.sampled_from(sorted(UPSTREAM_KINDS)))
def test_every_upstream_topic_parses_back_to_its_device_and_kind(device_id: str, suffix: str) -> None:
    topic = device_topic(device_id, suffix)
    assert parse_topic(topic) == (device_id, UPSTREAM_KINDS[suffix], suffix)
    assert split_topic(topic) == (device_id, UPSTREAM_KINDS[suffix])
    assert not is_fleet_publish(topic)


@given(device_ids, device_ids, st.sampled_from(sorted(CHILD_KINDS)))
def test_child_topics_parse_back_to_the_parent_and_the_child_kind(device_id: str, child: str, suffix: str) -> None:
    topic = child_topic(device_id, child, suffix)
    assert parse_topic(topic) == (device_id, CHILD_KINDS[suffix], f"child/{child}/{suffix}")


@given(device_ids, st.sampled_from(sorted(DOWNSTREAM_KINDS)))
def test_downstream_topics_are_the_fleet_s_and_never_parse_as_upstream(device_id: str, suffix: str) -> None:
    topic = device_topic(device_id, suffix)
    assert is_fleet_publish(topic)
    assert split_topic(topic, upstream=False) == (device_id, DOWNSTREAM_KINDS[suffix])
    with pytest.raises(ContractError) as err:
        parse_topic(topic)
    assert err.value.reason == "bad_topic"


@given(st.text(max_size=70).filter(lambda s: not re.fullmatch(DEVICE_ID_PATTERN, s)))
def test_an_id_outside_the_pattern_gets_no_topic_and_no_parse(device_id: str) -> None:
    with pytest.raises(ContractError):
        device_topic(device_id, "health")
    with pytest.raises(ContractError) as err:
        parse_topic(f"ioc/v1/d/{device_id}/health")
    assert err.value.reason == "bad_topic"


# -- names ---------------------------------------------------------------------------------------

@given(st.from_regex(ROLE_NAME_PATTERN, fullmatch=True), st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True))
def test_a_role_s_command_is_the_role_a_dot_and_a_name(role: str, command: str) -> None:
    assert is_role_name(role) and is_command_name(role) and is_command_name(f"{role}.{command}")
    assert len(f"{role}.{command}") <= COMMAND_NAME_MAX
    assert not is_role_name(f"{role}.{command}")
    assert not is_command_name(f"{role}.{command}.{command}") and not is_command_name(f"{role}.")


@given(st.text(max_size=40))
def test_names_are_exactly_the_pattern(name: str) -> None:
    assert is_role_name(name) == (re.fullmatch(ROLE_NAME_PATTERN, name) is not None)


# -- upstream messages ---------------------------------------------------------------------------

@given(st.sampled_from(sorted(UPSTREAM)), counts, counts, st.none() | counts)
def test_a_valid_message_with_any_stamp_comes_back_as_sent(name: str, ses: int, seq: int, ts: int | None) -> None:
    example = UPSTREAM[name]
    body = {**example["payload"], "ses": ses, "ts": ts}
    if "seq" in body:
        body["seq"] = seq
    message = parse_upstream(example["topic"], _payload(body))
    assert (message.ses, message.ts, message.body) == (ses, ts, body)
    assert message.seq == body.get("seq")
    assert message.topic == example["topic"]


@given(st.sampled_from(sorted(UPSTREAM)), st.data())
def test_a_missing_required_field_is_refused_by_its_name(name: str, data: st.DataObject) -> None:
    example = UPSTREAM[name]
    kind = parse_topic(example["topic"]).kind
    field = data.draw(st.sampled_from(sorted(SCHEMAS[kind][0])))
    body = {k: v for k, v in example["payload"].items() if k != field}
    with pytest.raises(ContractError) as err:
        parse_upstream(example["topic"], _payload(body))
    assert err.value.reason == "invalid" and f"missing field {field!r}" in str(err.value)


MARKER = "Zq<script>Marker"  # a value no field takes (not a role name, and in a list)


@given(st.sampled_from(sorted(UPSTREAM)), st.data(),
       st.sampled_from([[1, 2], [MARKER], True, {"x": [MARKER]}]))
def test_a_field_of_the_wrong_type_is_refused_by_its_name_without_its_value(
        name: str, data: st.DataObject, wrong: Any) -> None:
    example = UPSTREAM[name]
    kind = parse_topic(example["topic"]).kind
    required, optional = SCHEMAS[kind]
    takes_objects = {"data", "roles", "detail"} if isinstance(wrong, dict) else set()  # OBJECT fields take any object
    field = data.draw(st.sampled_from(sorted((required.keys() | optional.keys()) - takes_objects)))
    body = {**example["payload"], field: wrong}
    with pytest.raises(ContractError) as err:
        parse_upstream(example["topic"], _payload(body))
    assert err.value.reason == "invalid"
    assert f"field {field!r} must be" in str(err.value)
    assert MARKER not in str(err.value) and "script" not in str(err.value)


@given(st.one_of(counts, st.integers(max_value=-1), st.integers(min_value=MAX_INT),
                 st.floats(allow_nan=False, allow_infinity=False), st.none(), texts))
def test_telemetry_at_ms_is_a_unix_time_in_whole_milliseconds_or_left_out(at_ms: Any) -> None:
    example = EXAMPLES["telemetry"]
    body = {**example["payload"], "at_ms": at_ms}
    valid = isinstance(at_ms, int) and 0 <= at_ms < MAX_INT
    try:
        message = parse_upstream(example["topic"], _payload(body))
    except ContractError as err:
        assert not valid and err.reason == "invalid" and "'at_ms'" in str(err)
    else:
        assert valid and message.body["at_ms"] == at_ms


# -- downstream messages -------------------------------------------------------------------------

@given(device_ids, texts.filter(bool), st.sampled_from(["ping", "reboot", "light.override", "speaker.clip_fetch"]),
       st.dictionaries(texts, json_values, max_size=5), counts)
def test_a_command_the_fleet_makes_is_one_a_device_accepts(
        device_id: str, command_id: str, name: str, args: dict[str, Any], exp: int) -> None:
    try:
        topic, payload = make_command(device_id, command_id, name, args, exp)
    except ContractError as err:
        assert err.reason == "oversized" and len(json.dumps(args)) > DOWN_LIMITS["cmd"] // 2
        return
    assert split_topic(topic, upstream=False) == (device_id, "cmd")
    assert len(payload) <= DOWN_LIMITS["cmd"]
    assert parse_downstream("cmd", payload) == {"v": 1, "id": command_id, "name": name, "args": args, "exp": exp}


@given(device_ids, st.integers(min_value=0, max_value=2**31 - 1), st.dictionaries(texts, json_values, max_size=6))
def test_a_desired_state_the_fleet_makes_is_one_a_device_accepts(
        device_id: str, version: int, doc: dict[str, Any]) -> None:
    topic, payload = make_desired(device_id, version, doc)
    assert split_topic(topic, upstream=False) == (device_id, "state_desired")
    assert parse_downstream("state_desired", payload) == {"v": 1, "version": version, "doc": doc}


@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=2**31), st.booleans(), st.none()))
def test_a_desired_state_version_outside_32_bits_is_never_made(version: Any) -> None:
    with pytest.raises(ContractError) as err:
        make_desired("pi-dx-0001", version, {})
    assert err.value.reason == "invalid"
