"""JSON as the contract allows it: bounded nesting, finite numbers, well-formed text.

Python's `json` accepts `NaN`, `Infinity` and `1e999` (as inf), keeps lone surrogates such as
`"\\ud800"`, and recurses once per nesting level (a 2 KB payload nested 1,000 deep raises
RecursionError). None of that may get past the boundary: the database and every strict JSON
reader downstream would choke on it later, far from the message that caused it.
"""

import json
import math
import re
from typing import Any, NoReturn

from contract.errors import ContractError

MAX_DEPTH = 16  # objects and arrays inside each other; the deepest example message uses 4
MAX_INT = 2**53  # integers stay below this in size: exact in every JSON parser, fit every BIGINT

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
# an escape that may decode to a lone surrogate or a NUL: only then is the decoded text walked
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")
_BAD_CHAR = re.compile("[\ud800-\udfff\x00]")


def _too_deep(payload: bytes) -> bool:
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH:
        return False  # the common case, at C speed
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub(b'""', payload)):  # brackets inside strings don't nest
        if bracket.group() in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _refuse_constant(name: str) -> NoReturn:
    raise ContractError("invalid", f"{name} is not a number the contract allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ContractError("invalid", "a number too large for a 64-bit float")
    return value


def problem(value: Any, depth: int = 0, *, sent: bool = False) -> str | None:
    """What makes `value` unfit for strict JSON, or None: too deep, not finite, bad text; and, for
    what the fleet sends (`sent`), an integer of 2^53 or more in size (docs/protocol.md, Messages)."""
    if isinstance(value, str):
        return "text with a lone surrogate or a NUL character" if _BAD_CHAR.search(value) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "a number that is not finite (NaN or infinity)"
    if sent and isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT < value < MAX_INT:
        return "an integer of 2^53 or more in size"
    if isinstance(value, dict | list | tuple) and depth >= MAX_DEPTH:  # `depth` containers around it
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            found = problem(key, depth) if isinstance(key, str) else None
            found = found or problem(item, depth + 1, sent=sent)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for item in value:
            found = problem(item, depth + 1, sent=sent)
            if found:
                return found
    return None


def loads(payload: bytes) -> Any:
    """Decode a device's payload; ContractError (`bad_json` or `invalid`) says why not."""
    if _too_deep(payload):
        raise ContractError("invalid", f"nested deeper than {MAX_DEPTH} levels")
    try:
        # strict UTF-8 first: json.loads(bytes) would also take UTF-16 and UTF-32, and decodes
        # with 'surrogatepass', letting encoded lone surrogates through
        text = payload.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except ContractError:
        raise
    except RecursionError as err:  # the depth check above makes this unreachable; kept as a net
        raise ContractError("invalid", f"nested deeper than {MAX_DEPTH} levels") from err
    except UnicodeDecodeError as err:
        raise ContractError("bad_json", f"not UTF-8 ({err.reason} at byte {err.start})") from err
    except ValueError as err:
        raise ContractError("bad_json", f"not JSON: {err}") from err
    if _SUSPECT_ESCAPE.search(text):
        found = problem(value)
        if found:
            raise ContractError("invalid", found)
    return value


def dumps(value: Any) -> bytes:
    """Encode what the fleet sends: compact, and strict (ContractError `invalid` if it can't be)."""
    found = problem(value, sent=True)
    if found:
        raise ContractError("invalid", found)
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise ContractError("invalid", f"not encodable as JSON: {err}") from err
