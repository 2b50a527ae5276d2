# The firmware's side of the contract, run under the real MicroPython:
#   micropython mp_contract.py <slot folder, e.g. firmware/app_a> <contract/vectors/examples>
# Builds every upstream message an ESP32 sends from the values of its example and compares
# field names, types and values; parses the downstream examples. Prints "ok <check>" per check.
import json
import os
import sys

sys.path.insert(0, sys.argv[1])
import contract

EXAMPLES = sys.argv[2]
# Optional fields the protocol lists that an example does not show.
OPTIONAL = {"birth": ("hw", "next_seq"), "health": ("dropped",)}


def load(name):
    with open(EXAMPLES + "/" + name + ".json") as f:
        return json.load(f)


def same(a, b, where):
    # Deep equality that also insists on equal types (1 is not 1.0, None is not 0).
    assert type(a) is type(b), f"{where}: {a!r} is a {type(a)}, the example has a {type(b)}"
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{where}: fields {sorted(a)}, the example has {sorted(b)}"
        for k in a:
            same(a[k], b[k], where + "." + k)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i in range(len(a)):
            same(a[i], b[i], f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def stamped(body, p):
    stream = contract.Stream(p["ses"])
    stream.seq = p["seq"]
    return stream.stamp(body, p["ts"])


def check_wire(name, body, example):
    # What goes on the wire: the topic, and the encoded payload read back.
    kind = name.split(".")[0]
    suffix = {"cmd_result": "cmd/result", "state_reported": "state/reported"}.get(kind, kind)
    device_id = example["topic"].split("/")[3]
    assert contract.topic(device_id, suffix) == example["topic"], example["topic"]
    same(json.loads(contract.encode(body)), body, name + " encoded")
    print("ok", name)


def check_birth():
    ex = load("birth.esp32")
    p = ex["payload"]
    body = contract.birth(
        p["ses"], p["ts"], p["fw"], p["roles"], p["boot"]["n"], p["boot"]["reason"], p["period_s"]
    )
    same(body, p, "birth")
    with_hw = contract.birth(p["ses"], p["ts"], p["fw"], p["roles"], 1, "soft", 60, "ESP32")
    assert set(with_hw) == set(p) | {"hw"}
    assert all(k in OPTIONAL["birth"] for k in with_hw if k not in p)
    check_wire("birth.esp32", body, ex)


def check_death():
    ex = load("death.will")
    p = ex["payload"]
    body = contract.death(p["ses"], p["ts"], p["reason"])
    same(body, p, "death")
    check_wire("death.will", body, ex)


def check_health():
    ex = load("health.esp32")
    p = ex["payload"]
    body = stamped(
        contract.health(
            p["up_s"],
            p["fw"],
            p["heap_free"],
            p["heap_min"],
            p["heap_max_block"],
            p["rssi"],
            p["reset"],
            p["queue"],
            0,
            p["reconnects"],
            p["loop_ms"],
        ),
        p,
    )
    expected = dict(p)
    expected["dropped"] = 0
    same(body, expected, "health")
    # Unknown to this port: left out, never sent as null.
    body = contract.health(1, "0.1.0", 100, 90, None, None, "soft", 0, 0, 0, 1)
    assert "heap_max_block" not in body and "rssi" not in body
    check_wire("health.esp32", stamped(body, p), ex)


def check_cmd_result():
    ex = load("cmd_result")
    p = ex["payload"]
    body = stamped(contract.cmd_result(p["id"], p["status"], p["detail"]), p)
    same(body, p, "cmd_result")
    assert "detail" not in contract.cmd_result("x", "unknown")
    check_wire("cmd_result", body, ex)
    text = load("cmd_result.text")["payload"]  # a detail may be text
    same(stamped(contract.cmd_result(text["id"], text["status"], text["detail"]), text), text, "cmd_result.text")


def check_state_reported():
    ex = load("state_reported")
    p = ex["payload"]
    body = stamped(contract.state_reported(p["version"], p["status"]), p)
    same(body, p, "state_reported")
    assert contract.state_reported(4, "rejected", "bad")["error"] == "bad"
    check_wire("state_reported", body, ex)


def check_telemetry():
    ex = load("telemetry")
    p = ex["payload"]
    body = stamped(contract.telemetry(p["role"], p["r"]), p)
    same(body, p, "telemetry")
    check_wire("telemetry", body, ex)
    # readings that are not finite numbers are left out (the fleet refuses NaN and infinities)
    nan, inf = float("nan"), float("inf")
    kept = contract.telemetry("sim", {"a": nan, "b": inf, "c": -inf, "d": 1.5, "e": 3})
    same(kept, {"role": "sim", "r": {"d": 1.5, "e": 3}}, "telemetry without non-finite readings")
    assert b"nan" not in contract.encode(kept) and b"inf" not in contract.encode(kept)
    assert contract.telemetry("sim", {"a": nan}) is None, "telemetry of no finite reading"


def check_cmd():
    ex = load("cmd")
    payload = json.dumps(ex["payload"]).encode()
    same(contract.parse_cmd(payload), ex["payload"], "cmd")
    assert contract.command_id(payload) == ex["payload"]["id"]
    for name in ("cmd.light_override", "cmd.clip_fetch"):  # a role's own commands: dotted names
        role_cmd = load(name)["payload"]
        same(contract.parse_cmd(json.dumps(role_cmd).encode()), role_cmd, name)
    for bad in (
        {"v": 2},
        {"v": 1, "id": "", "name": "ping", "args": {}, "exp": 1},
        {"v": 1, "id": "x", "name": "ping", "args": [], "exp": 1},
        {"v": 1, "id": "x", "name": "ping", "args": {}, "exp": 1.5},
        {"v": 1, "id": "x" * 65, "name": "ping", "args": {}, "exp": 1},
    ):
        try:
            contract.parse_cmd(json.dumps(bad))
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    print("ok cmd")


def check_state_desired():
    ex = load("state_desired")
    payload = json.dumps(ex["payload"]).encode()
    same(contract.parse_desired(payload), ex["payload"], "state_desired")
    for bad in ({"v": 1, "version": -1, "doc": {}}, {"v": 1, "version": 1, "doc": []}, [1]):
        try:
            contract.parse_desired(json.dumps(bad))
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    print("ok state_desired")


def check_sequence():
    # Stamps are taken when a message is made: 0, 1, 2 ... in one stream, from 0 in the next.
    stream = contract.Stream(7)
    seqs = [stream.stamp({}, None)["seq"] for _ in range(3)]
    assert seqs == [0, 1, 2], seqs
    assert contract.Stream(8).stamp({}, None)["seq"] == 0
    try:
        contract.encode({"pad": "x" * contract.UPSTREAM_MAX})
    except ValueError:
        print("ok sequence")
        return
    raise AssertionError("an oversized message was encoded")


assert sorted(os.listdir(EXAMPLES))  # the examples are where the caller said
for check in (
    check_birth,
    check_death,
    check_health,
    check_cmd_result,
    check_state_reported,
    check_telemetry,
    check_cmd,
    check_state_desired,
    check_sequence,
):
    check()
