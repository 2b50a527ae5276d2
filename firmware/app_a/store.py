# Small JSON files on flash (the board's filesystem root; the current folder on the host).
import json
import os


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, obj):
    # Write a sibling and rename it over the old file: a power cut leaves the old or the new
    # version, never half of one.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    try:
        os.rename(tmp, path)
    except OSError:  # FAT will not rename over a file; LittleFS does
        os.remove(path)
        os.rename(tmp, path)


class Counters:
    # The boot count and the stream counter `ses` (docs/protocol.md: +1 at boot, +1 per connect),
    # kept in state.json so no stream number is ever used twice.
    def __init__(self, path="state.json"):
        self.path = path
        saved = read_json(path, {}) or {}
        self.boots = saved.get("boots", 0)
        # No counter (a new or re-flashed board, state.json lost or damaged): a random 48-bit
        # restart, never 0, whose streams the fleet has seen (docs/protocol.md, "Streams").
        self.ses = saved.get("ses") or 1 << 47 | int.from_bytes(os.urandom(6), "big")
        self._pending = None

    def _save(self):
        write_json(self.path, {"boots": self.boots, "ses": self.ses})

    def on_boot(self):
        self.boots += 1
        self.ses += 1
        self._pending = None
        self._save()
        return self.ses

    def ses_for_connect(self):
        # A failed attempt sent nothing in its stream, so the number is reused by the next
        # attempt instead of wearing the flash once per retry.
        if self._pending is None:
            self.ses += 1
            self._save()
            self._pending = self.ses
        return self._pending

    def connected(self):
        self._pending = None
