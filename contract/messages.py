"""Parse and check upstream messages; build downstream ones.

Validation is table-driven and hand-written rather than a schema library: it runs once per
ingested message, and it must say exactly which field is wrong without repeating what the
device sent (a refusal names the field and what it must be, never its value).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from contract import strict_json
from contract.errors import ContractError
from contract.names import COMMAND_NAME_MAX, is_command_name, is_role_name
from contract.topics import ROOT, device_topic, parse_topic

CONTRACT_VERSION = 1
UPSTREAM_MAX_BYTES = 8192
DOWN_LIMITS = {"cmd": 2048, "state/desired": 16384}
MAX_COMMAND_ID = 64
MAX_INT = strict_json.MAX_INT  # exact in every JSON parser, fits every database's BIGINT
MAX_VERSION = 2**31  # desired/reported versions are 32-bit columns
MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class Check:
    test: Callable[[Any], bool]
    expect: str  # what the field must be, for the refusal's text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -MAX_INT < value < MAX_INT


def _is_count(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _is_number(value: Any) -> bool:  # finite: strict_json refused NaN and infinities already
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(limit: int) -> Check:
    return Check(lambda v: isinstance(v, str) and 0 < len(v) <= limit, f"text of 1 to {limit} characters")


def _one_of(*allowed: str) -> Check:
    return Check(lambda v: isinstance(v, str) and v in allowed, "one of " + ", ".join(allowed))


def _is_readings(value: Any) -> bool:
    if not isinstance(value, dict) or not 0 < len(value) <= 64:
        return False
    for k, v in value.items():  # a plain loop: this runs for every reading the fleet ingests
        if not (isinstance(k, str) and 0 < len(k) <= 64 and isinstance(v, int | float) and not isinstance(v, bool)):
            return False
    return True


def _is_snapshot(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("ref"), str) and 0 < len(value["ref"]) <= MAX_TEXT
            and isinstance(value.get("sha256"), str) and len(value["sha256"]) == 64
            and _is_count(value.get("bytes")))


def _is_stream_end(value: Any) -> bool:
    return isinstance(value, dict) and _is_count(value.get("ses")) and _is_count(value.get("next_seq"))


def _is_boot(value: Any) -> bool:
    return (isinstance(value, dict) and _is_count(value.get("n")) and isinstance(value.get("reason"), str)
            and 0 < len(value["reason"]) <= MAX_TEXT)


INT = Check(_is_int, "an integer")
COUNT = Check(_is_count, "an integer from 0 to 2^53-1")
NUMBER = Check(_is_number, "a finite number")
TEXT = _text(MAX_TEXT)
TS = Check(lambda v: v is None or _is_count(v), "null or Unix time in integer milliseconds")
UNIX_MS = Check(_is_count, "Unix time in integer milliseconds")
OBJECT = Check(lambda v: isinstance(v, dict), "an object")
READINGS = Check(_is_readings, "an object of 1 to 64 named finite numbers")
ROLE = Check(is_role_name, "a role name: a-z, 0-9 and _, 1 to 32 characters, starting with a letter")
ROLES = Check(lambda v: isinstance(v, list) and len(v) <= 16 and all(is_role_name(r) for r in v),
              "a list of at most 16 role names")
VERSION = Check(lambda v: _is_count(v) and v < MAX_VERSION, "an integer from 0 to 2^31-1")
DETAIL = Check(lambda v: isinstance(v, dict | str), "an object or text")
PCT = Check(lambda v: _is_number(v) and 0 <= v <= 100, "a number from 0 to 100")
SNAPSHOT = Check(_is_snapshot, 'an object {"ref", "sha256" (64 hex characters), "bytes"}')
BOOT = Check(_is_boot, 'an object {"n": boot count, "reason": text}')
STREAM_END = Check(_is_stream_end, 'an object {"ses", "next_seq"} of integers from 0 to 2^53-1')

_ENVELOPE: dict[str, Check] = {"ses": COUNT, "seq": COUNT, "ts": TS}
_PRESENCE: dict[str, Check] = {"ses": COUNT, "ts": TS}

# kind -> (required fields, optional fields). `v` is checked for every kind.
SCHEMAS: dict[str, tuple[dict[str, Check], dict[str, Check]]] = {
    "birth": (
        {**_PRESENCE, "kind": _one_of("pi", "esp32"), "fw": _text(64), "roles": ROLES, "boot": BOOT,
         "period_s": COUNT},
        {"hw": TEXT, "next_seq": COUNT, "prev": STREAM_END},
    ),
    "death": ({**_PRESENCE, "reason": _one_of("lost", "shutdown")}, {}),
    "health": (
        {**_ENVELOPE, "up_s": COUNT, "fw": _text(64)},
        {"cpu_pct": NUMBER, "mem_pct": NUMBER, "disk_pct": NUMBER, "temp_c": NUMBER,
         "heap_free": COUNT, "heap_min": COUNT, "heap_max_block": COUNT, "rssi": INT, "reset": TEXT,
         "queue": COUNT, "dropped": COUNT, "reconnects": COUNT, "sys_up_s": COUNT, "roles": OBJECT,
         "loop_ms": COUNT},
    ),
    # at_ms: the time the readings stand for, when it is not `ts` (a sample taken before it was sent)
    "telemetry": ({**_ENVELOPE, "role": ROLE, "r": READINGS}, {"at_ms": UNIX_MS}),
    "event": (
        {**_ENVELOPE, "id": TEXT, "type": _text(64), "phase": _one_of("start", "update", "end", "once"),
         "category": _one_of("security", "traffic_safety", "other"), "data": OBJECT},
        {"snapshot": SNAPSHOT},
    ),
    "cmd_result": (
        {**_ENVELOPE, "id": _text(MAX_COMMAND_ID), "status": _one_of("ok", "error", "expired", "unknown")},
        {"detail": DETAIL},
    ),
    "state_reported": (
        {**_ENVELOPE, "version": VERSION, "status": _one_of("applied", "rejected")},
        {"error": TEXT},
    ),
    # accepted and numbered now; what the fleet keeps of them comes with the OTA and child-device work
    "ota_progress": ({**_ENVELOPE, "release": _text(64), "status": _text(32)}, {"pct": PCT, "detail": DETAIL}),
    "child_birth": ({**_ENVELOPE, "kind": _text(32)}, {"fw": _text(64), "hw": TEXT}),
    "child_death": ({**_ENVELOPE, "reason": _text(32)}, {}),
    "child_health": (dict(_ENVELOPE), {}),
}
PRESENCE_KINDS = frozenset({"birth", "death"})  # not numbered by `seq`


@dataclass(frozen=True, slots=True)
class Upstream:
    """One checked message from a device. `seq` is None for birth and death."""

    device_id: str
    kind: str
    ses: int
    seq: int | None
    ts: int | None
    body: dict[str, Any]
    suffix: str  # the topic under the device's subtree: `health`, `child/cam-1/birth`, …
    retained: bool = False  # set by the transport: a retained message the broker replayed

    @property
    def topic(self) -> str:
        """The topic it came on."""
        return f"{ROOT}/d/{self.device_id}/{self.suffix}"


def _check_fields(kind: str, body: Mapping[str, Any]) -> None:
    required, optional = SCHEMAS[kind]
    for name, check in required.items():
        if name not in body:
            raise ContractError("invalid", f"{kind}: missing field {name!r}")
        if not check.test(body[name]):
            raise ContractError("invalid", f"{kind}: field {name!r} must be {check.expect}")
    for name, check in optional.items():
        if name in body and not check.test(body[name]):
            raise ContractError("invalid", f"{kind}: field {name!r} must be {check.expect}")


def _is_v1(body: Mapping[str, Any]) -> bool:
    v = body.get("v")
    return isinstance(v, int) and not isinstance(v, bool) and v == CONTRACT_VERSION


def parse_upstream(topic: str, payload: bytes,
                   loads: Callable[[bytes], Any] = strict_json.loads) -> Upstream:
    """Check a device's message against the contract; ContractError says why it is refused.

    `loads`: a faster parser that gives strict_json.loads's value or its ContractError (the fleet's,
    fleet/ingest/fastjson.py); this package itself stays standard-library only."""
    if len(payload) > UPSTREAM_MAX_BYTES:
        raise ContractError("oversized", f"{len(payload)} bytes, the limit is {UPSTREAM_MAX_BYTES}")
    device_id, kind, suffix = parse_topic(topic)
    body = loads(payload)
    if not isinstance(body, dict):
        raise ContractError("invalid", f"{kind}: payload is not a JSON object")
    if not _is_v1(body):
        raise ContractError("unsupported_version", f"{kind}: v must be {CONTRACT_VERSION}")
    _check_fields(kind, body)
    seq = None if kind in PRESENCE_KINDS else body["seq"]
    return Upstream(device_id, kind, body["ses"], seq, body["ts"], body, suffix)


def parse_downstream(kind: str, payload: bytes) -> dict[str, Any]:
    """Check a command or desired-state document (what a device must accept)."""
    body = strict_json.loads(payload)
    if not isinstance(body, dict) or not _is_v1(body):
        raise ContractError("unsupported_version", f"{kind}: not a v{CONTRACT_VERSION} object")
    if kind == "cmd":
        ok = (_text(MAX_COMMAND_ID).test(body.get("id")) and _text(COMMAND_NAME_MAX).test(body.get("name"))
              and isinstance(body.get("args"), dict) and _is_count(body.get("exp")))
    elif kind == "state_desired":
        ok = VERSION.test(body.get("version")) and isinstance(body.get("doc"), dict)
    else:
        raise ContractError("bad_topic", f"{kind!r} is not a downstream kind")
    if not ok:
        raise ContractError("invalid", f"{kind}: fields missing or of the wrong type")
    return body


def _encode_down(suffix: str, body: dict[str, Any]) -> bytes:
    data = strict_json.dumps(body)
    if len(data) > DOWN_LIMITS[suffix]:
        raise ContractError("oversized", f"{suffix}: {len(data)} bytes, the limit is {DOWN_LIMITS[suffix]}")
    return data


def make_command(device_id: str, command_id: str, name: str, args: dict[str, Any],
                 expires_ms: int) -> tuple[str, bytes]:
    """(topic, payload) of a command; ContractError if it breaks a rule or a limit."""
    if not command_id or len(command_id) > MAX_COMMAND_ID:
        raise ContractError("invalid", f"command id must be 1..{MAX_COMMAND_ID} characters")
    if not is_command_name(name):
        raise ContractError("invalid", "a command name is `name` or `role.name` (a-z, 0-9, _; at most 64)")
    body = {"v": CONTRACT_VERSION, "id": command_id, "name": name, "args": args, "exp": expires_ms}
    return device_topic(device_id, "cmd"), _encode_down("cmd", body)


def make_desired(device_id: str, version: int, doc: dict[str, Any]) -> tuple[str, bytes]:
    """(topic, payload) of a desired-state document (published retained)."""
    if not VERSION.test(version):
        raise ContractError("invalid", f"a desired-state version must be {VERSION.expect}")
    body = {"v": CONTRACT_VERSION, "version": version, "doc": doc}
    return device_topic(device_id, "state/desired"), _encode_down("state/desired", body)
