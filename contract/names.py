"""Names in the contract: roles and commands (docs/protocol.md, "Messages").

A role's own commands are `<role>.<command>` (`speaker.clip_fetch`, `light.override`); the core
commands have no dot (`ping`, `reboot`). Lengths fit the database columns that store them.
"""

import re

ROLE_NAME_PATTERN = r"[a-z][a-z0-9_]{0,31}"
COMMAND_NAME_PATTERN = ROLE_NAME_PATTERN + r"(?:\.[a-z][a-z0-9_]{0,30})?"
COMMAND_NAME_MAX = 64

_ROLE = re.compile(ROLE_NAME_PATTERN)
_COMMAND = re.compile(COMMAND_NAME_PATTERN)


def is_role_name(name: object) -> bool:
    return isinstance(name, str) and _ROLE.fullmatch(name) is not None


def is_command_name(name: object) -> bool:
    return isinstance(name, str) and _COMMAND.fullmatch(name) is not None
