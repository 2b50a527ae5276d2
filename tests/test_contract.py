"""The CPython side of the contract against its example messages."""

import json

import pytest

from fleet.contract import ContractError, parse_downstream, parse_upstream, split_topic
from fleet.contract.examples import invalid_cases, payload_bytes, valid_examples

EXAMPLES = valid_examples()
DOWN = {"cmd", "state_desired"}


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
        assert message.ses == example["payload"]["ses"]
        assert (message.seq is None) == (kind in {"birth", "death"})
    assert example["qos"] == 1
    assert example["retain"] == (kind in {"birth", "death", "state_desired"})


def test_examples_cover_every_message_kind() -> None:
    kinds = {name.split(".")[0] for name in EXAMPLES}
    assert kinds == {"birth", "death", "health", "telemetry", "event", "cmd", "cmd_result",
                     "state_desired", "state_reported"}


@pytest.mark.parametrize("case", invalid_cases(), ids=lambda c: c["name"])
def test_invalid_messages_are_refused_with_their_reason(case: dict) -> None:
    with pytest.raises(ContractError) as err:
        parse_upstream(case["topic"], payload_bytes(case))
    assert err.value.reason == case["reason"]
    assert str(err.value)
