"""Writing a board so that it runs its previous firmware until the new one is complete and checked.

The order (docs/provisioning.md, "Writing"):

1. `provision.partial` (the marker) names the device id being written: if the link dies, the next
   flash of this board continues under that id;
2. every new file is written under `provision.new/` (the firmware, `ca.der`, later `config.json`
   and the manifest): the files the board runs are not touched, so a board unplugged at any
   moment of the long copy boots its previous firmware, identity and credentials;
3. every staged file's SHA-256 is checked on the board;
4. one script on the board switches (`SWITCH`): it writes the journal `provision.swap`, moves
   the files being replaced into `provision.old/` (`main.py` first, so the board cannot boot a
   mix), moves the staged ones into place (`main.py` last) and removes the journal;
5. `provision.old/` and the marker are removed.

A failure before step 4 with the link working removes `provision.new/` (and the marker): the
board is as it was. A switch that was interrupted (the journal is still there) is undone by
`ROLL_BACK`, which the next flash runs first: the previous files come back from
`provision.old/`.

What is replaced, what is kept: `REPLACED` always; `IDENTITY_STATE` (the stream counter, the
desired state, the roles' own state) is kept when the board keeps its identity and moved away
with the rest when it gets another one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from provisioning.board import BoardLink, Progress
from provisioning.errors import ProvisionError
from provisioning.image import (
    BOOT_STAGE,
    CA_FILE,
    CONFIG,
    MANIFEST,
    MARKER,
    OTA_KEYS,
    hashes_code,
    mkdirs_code,
    rm_tree_code,
)

STAGE = "provision.new"
OLD = "provision.old"
JOURNAL = "provision.swap"
STATE = "state.json"  # the firmware's boot and stream counters (firmware/app_a/store.py)
# Replaced by every flash; the boot stage last in this list (moved away first, moved in last).
REPLACED = ("app_a", "app_b", "bootstate.json", CONFIG, CA_FILE, MANIFEST, BOOT_STAGE)
# Replaced only when this flash writes one: a board flashed again without --ota-keys keeps the
# trust list it has (which a committed release may have rotated, docs/ota.md).
REPLACED_IF_WRITTEN = (OTA_KEYS,)
# What belongs to a device identity on the board: the stream counter (a stream number is never
# used twice), the fleet's desired state, the light's counters and overrides, the speaker's record
# of broadcasts and its clips.
IDENTITY_STATE = (STATE, "desired.json", "light.json", "speaker.json", "clips")

_HELPERS = """import os, json
def _e(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
def _rm(p):
    try:
        m = os.stat(p)[0]
    except OSError:
        return
    if m & 0x4000:
        for e in list(os.ilistdir(p)):
            _rm(p + '/' + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
"""

# What the board holds, in one round trip (config.json holds the password: it stays in memory).
_SURVEY = _HELPERS + """def _r(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None
print(json.dumps({{'config': _r({config!r}), 'marker': _r({marker!r}), 'journal': _e({journal!r}),
                  'state': _r({state!r}), 'firmware': _e({boot!r}), 'leftovers': _e({stage!r}) or _e({old!r})}}))
"""

# The switch. `out` lists the boot stage last: it leaves first; `into` lists it last: it comes last.
_SWITCH = _HELPERS + """_in = {into!r}
_out = {out!r}
with open({journal!r} + '.tmp', 'w') as f:
    f.write(json.dumps({{'in': _in, 'out': _out}}))
os.rename({journal!r} + '.tmp', {journal!r})
if not _e({old!r}):
    os.mkdir({old!r})
for _n in reversed(_out):
    if _e(_n):
        os.rename(_n, {old!r} + '/' + _n)
for _n in _in:
    os.rename({stage!r} + '/' + _n, _n)
os.remove({journal!r})
print('switched')
"""

# Undo an interrupted switch (if the journal is there), then drop what a failed flash staged.
_ROLL_BACK = _HELPERS + """try:
    with open({journal!r}) as f:
        _j = json.load(f)
except (OSError, ValueError):
    _j = None
if _j:
    for _n in reversed(_j['in']):
        if _e(_n) and not _e({stage!r} + '/' + _n):
            _rm(_n)
    for _n in _j['out']:
        if _e({old!r} + '/' + _n):
            _rm(_n)
            os.rename({old!r} + '/' + _n, _n)
for _p in ({journal!r}, {journal!r} + '.tmp', {stage!r}, {old!r}):
    _rm(_p)
print('undone' if _j else 'clean')
"""

# Replace one small file the way the firmware does (a sibling renamed over it; FAT cannot).
_REPLACE = """import os
try:
    os.rename({tmp!r}, {path!r})
except OSError:
    os.remove({path!r})
    os.rename({tmp!r}, {path!r})
"""


@dataclass(frozen=True)
class BoardFiles:
    """What a board holds before it is flashed (see `survey`)."""

    config: dict[str, Any] | None  # its config.json, if readable
    marker_id: str | None  # the device id an earlier flash was writing when it was interrupted
    interrupted_switch: bool  # the journal of a switch that did not finish
    state: dict[str, Any] | None  # state.json
    has_firmware: bool  # a boot stage (main.py) to run
    leftovers: bool  # provision.new/ or provision.old/ from a flash that did not finish

    @property
    def device_id(self) -> str | None:
        value = (self.config or {}).get("device_id")
        return value if isinstance(value, str) else None

    @property
    def roles(self) -> list[str]:
        roles = (self.config or {}).get("roles")
        return [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []

    @property
    def session(self) -> int | None:
        """The stream counter the firmware saved (the last session it used)."""
        ses = (self.state or {}).get("ses")
        return ses if isinstance(ses, int) and not isinstance(ses, bool) and ses >= 0 else None


def _json_object(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def survey(board: BoardLink) -> BoardFiles:
    """Read the board's identity, marker, journal and counters in one round trip."""
    out = board.run(_SURVEY.format(config=CONFIG, marker=MARKER, journal=JOURNAL, state=STATE, boot=BOOT_STAGE,
                                   stage=STAGE, old=OLD))
    try:
        found = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as err:
        raise ProvisionError(f"{board.port}: the board's answer about its files is unreadable") from err
    marker = _json_object(found.get("marker"))
    marker_id = marker.get("device_id") if marker else None
    return BoardFiles(config=_json_object(found.get("config")),
                      marker_id=marker_id if isinstance(marker_id, str) else None,
                      interrupted_switch=bool(found.get("journal")), state=_json_object(found.get("state")),
                      has_firmware=bool(found.get("firmware")), leftovers=bool(found.get("leftovers")))


def roll_back(board: BoardLink) -> bool:
    """Undo an interrupted switch and drop staged files; True if a switch was undone."""
    return board.run(_ROLL_BACK.format(journal=JOURNAL, stage=STAGE, old=OLD)).strip().endswith("undone")


class Staging:
    """The new files of one flash, written under provision.new/ and switched in at once."""

    def __init__(self, board: BoardLink, dirs: list[str]) -> None:
        self.board = board
        self.written: dict[str, str] = {}  # board path (as it will be) -> SHA-256
        self.names: list[str] = []  # top-level names to move in, boot stage last
        board.run(mkdirs_code([STAGE, *(f"{STAGE}/{d}" for d in dirs)]))

    def write(self, path: str, data: bytes, sha: str, progress: Progress | None = None) -> None:
        self.board.write_file(f"{STAGE}/{path}", data, progress)
        self.written[path] = sha
        top = path.split("/", 1)[0]
        if top not in self.names:
            self.names.append(top)

    def check(self) -> None:
        """Every staged file read back by its SHA-256, on the board."""
        paths = list(self.written)
        found = self.board.run(hashes_code([f"{STAGE}/{p}" for p in paths])).split()
        for path, got in zip(paths, found + ["-"] * len(paths), strict=False):
            if self.written[path] != got:
                raise ProvisionError(f"{self.board.port}: {path} on the board is not what was written "
                                     "(flash full or failing?)")

    def switch(self, identity_changes: bool) -> None:
        """Move the staged files into place (see the module's docstring)."""
        into = sorted((n for n in self.names if n != BOOT_STAGE), key=self.names.index)
        if BOOT_STAGE in self.names:
            into.append(BOOT_STAGE)
        moved = [n for n in IDENTITY_STATE if identity_changes or n in into]
        written = [n for n in REPLACED_IF_WRITTEN if n in into]
        out = [*moved, *written, *(n for n in REPLACED if n not in moved)]  # BOOT_STAGE is REPLACED's last
        missing = set(into) - set(out)
        assert not missing, missing
        self.board.run(_SWITCH.format(into=into, out=out, journal=JOURNAL, stage=STAGE, old=OLD))

    def finish(self) -> None:
        """After the switch: the previous files and the marker go."""
        self.board.run(rm_tree_code([OLD, STAGE, MARKER]))


def replace_file(board: BoardLink, path: str, data: bytes) -> None:
    """Write a small file in place, as the firmware does: a sibling renamed over it."""
    tmp = path + ".tmp"
    board.write_file(tmp, data)
    board.run(_REPLACE.format(tmp=tmp, path=path))
