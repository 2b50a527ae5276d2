"""Parse and check upstream messages; build downstream ones.

Validation is table-driven and hand-written rather than a schema library: it runs once per
ingested message, and it must say exactly which field is wrong.
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.contract.errors import ContractError
from fleet.contract.topics import UPSTREAM_KINDS, device_topic, split_topic

KIND_SUFFIX = {kind: suffix for suffix, kind in UPSTREAM_KINDS.items()}

CONTRACT_VERSION = 1
UPSTREAM_MAX_BYTES = 8192
DOWN_LIMITS = {"cmd": 2048, "state/desired": 16384}
MAX_COMMAND_ID = 64
MAX_INT = 2**53  # exact in every JSON parser, fits every database's BIGINT

Check = Callable[[Any], bool]


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -MAX_INT < value < MAX_INT


def _nonneg_int(value: Any) -> bool:
    return _int(value) and 0 <= value < MAX_INT


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _str(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200


def _ts(value: Any) -> bool:
    return value is None or _nonneg_int(value)


def _obj(value: Any) -> bool:
    return isinstance(value, dict)


def _readings(value: Any) -> bool:
    return isinstance(value, dict) and 0 < len(value) <= 64 and all(
        isinstance(k, str) and _number(v) for k, v in value.items()
    )


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 16 and all(_str(v) for v in value)


def _one_of(*allowed: str) -> Check:
    def check(value: Any) -> bool:
        return value in allowed

    check.__doc__ = "one of " + ", ".join(allowed)
    return check


def _snapshot(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and _str(value.get("ref"))
        and isinstance(value.get("sha256"), str)
        and len(value["sha256"]) == 64
        and _nonneg_int(value.get("bytes"))
    )


def _boot(value: Any) -> bool:
    return isinstance(value, dict) and _nonneg_int(value.get("n")) and _str(value.get("reason"))


_ENVELOPE: dict[str, Check] = {"ses": _nonneg_int, "seq": _nonneg_int, "ts": _ts}

# kind -> (required fields, optional fields). `v` is checked for every kind.
SCHEMAS: dict[str, tuple[dict[str, Check], dict[str, Check]]] = {
    "birth": (
        {"ses": _nonneg_int, "ts": _ts, "kind": _one_of("pi", "esp32"), "fw": _str,
         "roles": _str_list, "boot": _boot, "period_s": _nonneg_int},
        {"hw": _str, "next_seq": _nonneg_int},
    ),
    "death": ({"ses": _nonneg_int, "ts": _ts, "reason": _one_of("lost", "shutdown")}, {}),
    "health": (
        {**_ENVELOPE, "up_s": _nonneg_int, "fw": _str},
        {"cpu_pct": _number, "mem_pct": _number, "disk_pct": _number, "temp_c": _number,
         "heap_free": _nonneg_int, "heap_min": _nonneg_int, "heap_max_block": _nonneg_int,
         "rssi": _int, "reset": _str, "queue": _nonneg_int, "dropped": _nonneg_int,
         "reconnects": _nonneg_int, "sys_up_s": _nonneg_int, "roles": _obj,
         "loop_ms": _nonneg_int},
    ),
    "telemetry": ({**_ENVELOPE, "role": _str, "r": _readings}, {}),
    "event": (
        {**_ENVELOPE, "id": _str, "type": _str, "phase": _one_of("start", "update", "end", "once"),
         "category": _one_of("security", "traffic_safety", "other"), "data": _obj},
        {"snapshot": _snapshot},
    ),
    "cmd_result": (
        {**_ENVELOPE, "id": _str, "status": _one_of("ok", "error", "expired", "unknown")},
        {"detail": lambda v: isinstance(v, dict | str)},
    ),
    "state_reported": (
        {**_ENVELOPE, "version": _nonneg_int, "status": _one_of("applied", "rejected")},
        {"error": _str},
    ),
}


@dataclass(frozen=True, slots=True)
class Upstream:
    """One checked message from a device. `seq` is None for birth and death."""

    device_id: str
    kind: str
    ses: int
    seq: int | None
    ts: int | None
    body: dict[str, Any]

    @property
    def topic(self) -> str:
        """The topic it came on (the kind's own topic in the device's subtree)."""
        return device_topic(self.device_id, KIND_SUFFIX[self.kind])


def _check_fields(kind: str, body: Mapping[str, Any]) -> None:
    required, optional = SCHEMAS[kind]
    for name, check in required.items():
        if name not in body:
            raise ContractError("invalid", f"{kind}: missing field {name!r}")
        if not check(body[name]):
            raise ContractError("invalid", f"{kind}: field {name!r} has a bad value {body[name]!r:.60}")
    for name, check in optional.items():
        if name in body and not check(body[name]):
            raise ContractError("invalid", f"{kind}: field {name!r} has a bad value {body[name]!r:.60}")


def parse_upstream(topic: str, payload: bytes) -> Upstream:
    """Check a device's message against the contract; ContractError says why it is refused."""
    if len(payload) > UPSTREAM_MAX_BYTES:
        raise ContractError("oversized", f"{len(payload)} bytes, the limit is {UPSTREAM_MAX_BYTES}")
    device_id, kind = split_topic(topic)
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as err:
        raise ContractError("bad_json", f"not JSON: {err}") from err
    if not isinstance(body, dict):
        raise ContractError("invalid", f"{kind}: payload is not a JSON object")
    if body.get("v") != CONTRACT_VERSION:
        raise ContractError("unsupported_version", f"{kind}: v={body.get('v')!r}, this is v{CONTRACT_VERSION}")
    _check_fields(kind, body)
    return Upstream(device_id, kind, body["ses"], body.get("seq"), body["ts"], body)


def parse_downstream(kind: str, payload: bytes) -> dict[str, Any]:
    """Check a command or desired-state document (what a device must accept)."""
    body = json.loads(payload)
    if not isinstance(body, dict) or body.get("v") != CONTRACT_VERSION:
        raise ContractError("unsupported_version", f"{kind}: not a v{CONTRACT_VERSION} object")
    if kind == "cmd":
        ok = (_str(body.get("id")) and len(body["id"]) <= MAX_COMMAND_ID and _str(body.get("name"))
              and _obj(body.get("args")) and _nonneg_int(body.get("exp")))
    elif kind == "state_desired":
        ok = _nonneg_int(body.get("version")) and _obj(body.get("doc"))
    else:
        raise ContractError("bad_topic", f"{kind!r} is not a downstream kind")
    if not ok:
        raise ContractError("invalid", f"{kind}: fields missing or of the wrong type")
    return body


def _encode_down(suffix: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > DOWN_LIMITS[suffix]:
        raise ContractError("oversized", f"{suffix}: {len(data)} bytes, the limit is {DOWN_LIMITS[suffix]}")
    return data


def make_command(device_id: str, command_id: str, name: str, args: dict[str, Any],
                 expires_ms: int) -> tuple[str, bytes]:
    """(topic, payload) of a command; ContractError if it breaks a limit."""
    if not command_id or len(command_id) > MAX_COMMAND_ID:
        raise ContractError("invalid", f"command id must be 1..{MAX_COMMAND_ID} characters")
    body = {"v": CONTRACT_VERSION, "id": command_id, "name": name, "args": args, "exp": expires_ms}
    return device_topic(device_id, "cmd"), _encode_down("cmd", body)


def make_desired(device_id: str, version: int, doc: dict[str, Any]) -> tuple[str, bytes]:
    """(topic, payload) of a desired-state document (published retained)."""
    body = {"v": CONTRACT_VERSION, "version": version, "doc": doc}
    return device_topic(device_id, "state/desired"), _encode_down("state/desired", body)
