"""Which device id a flash gives a board: the one it has, unless the technician asks otherwise.

A board that was flashed before carries its id in `config.json`. Flashing it again keeps that id
(and so its record in the fleet, its history and its desired state): the fleet issues new
credentials for the same id, which revokes the old ones. A new id only when asked:

| the board holds | options | the board gets | `how` |
|---|---|---|---|
| an id | none | the same id | kept |
| an id | `--new-identity` | a new id (an interrupted `--new-identity` flash's id, if there is one) | new / continued |
| anything | `--device-id X` | X (the id of a board it replaces, for instance) | kept / assigned |
| no id, the marker of an interrupted flash | none | the marker's id | continued |
| no id | none | a new id | new |

A board whose roles differ from `--kind` keeps its id only when `--device-id` names it: a
light's id on a speaker would mislead everyone who reads it.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Literal

from provisioning.errors import ProvisionError
from provisioning.staging import BoardFiles

DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")

How = Literal["kept", "assigned", "continued", "new"]


def slug(text: str) -> str:
    """'Chợ Đồng Xoài' -> 'cho-dong-xoai': ASCII, lower case, words joined by '-'."""
    text = text.replace("đ", "d").replace("Đ", "D")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def new_device_id(prefix: str, site: str) -> str:
    """`{prefix}-{site slug}-{4 hex}`, at most 63 characters (the contract's device id)."""
    suffix = secrets.token_hex(2)
    room = 63 - len(prefix) - len(suffix) - 2
    site_part = slug(site)[:room].strip("-")
    device_id = f"{prefix}-{site_part}-{suffix}" if site_part else f"{prefix}-{suffix}"
    assert DEVICE_ID_RE.match(device_id), device_id
    return device_id


def valid_id(value: str | None) -> str | None:
    return value if value is not None and DEVICE_ID_RE.match(value) else None


@dataclass(frozen=True)
class IdentityPlan:
    device_id: str
    previous: str | None  # the board's id before this flash (None: it had none)
    how: How

    @property
    def changes(self) -> bool:
        """Whether the board ends up with another identity than the one it had."""
        return self.device_id != self.previous

    @property
    def fresh(self) -> bool:
        """Whether the id was made up by the tool (this run or an interrupted one)."""
        return self.how in ("new", "continued")

    def describe(self) -> str:
        before = f" (was {self.previous})" if self.previous else ""
        if self.how == "kept":
            return "identity kept"
        if self.how == "assigned":
            return f"identity {self.device_id} given{before}"
        if self.how == "continued":
            return f"identity of an interrupted flash{before}"
        return f"new identity{before}" if self.previous else "new device"


def choose_identity(port: str, files: BoardFiles, *, kind: str, site: str | None, new_identity: bool,
                    device_id: str | None) -> IdentityPlan:
    """The identity this flash gives the board (see the module's table)."""
    board_id = valid_id(files.device_id)
    pending = valid_id(files.marker_id)
    if device_id is not None:
        if not DEVICE_ID_RE.match(device_id):
            raise ProvisionError(f"--device-id {device_id!r}: a device id is 2-63 of a-z, 0-9 and '-', "
                                 "starting with a letter or digit")
        return IdentityPlan(device_id, board_id, "kept" if device_id == board_id else "assigned")
    if new_identity:
        if pending is not None and pending != board_id and pending.startswith(f"{kind}-"):
            return IdentityPlan(pending, board_id, "continued")
        return IdentityPlan(_fresh(kind, site), board_id, "new")
    if board_id is not None:
        if files.roles and files.roles != [kind]:
            raise ProvisionError(
                f"{port}: the board is {board_id}, a {'+'.join(files.roles)} node; flashing it as {kind} "
                f"needs --new-identity (a new id) or --device-id (keep --kind {files.roles[0]} to keep its id)")
        return IdentityPlan(board_id, board_id, "kept")
    if pending is not None and pending.startswith(f"{kind}-"):
        return IdentityPlan(pending, None, "continued")
    return IdentityPlan(_fresh(kind, site), None, "new")


def _fresh(kind: str, site: str | None) -> str:
    if not site:
        raise ProvisionError("--site is needed to make a new device id (it is part of the id)")
    return new_device_id(kind, site)
