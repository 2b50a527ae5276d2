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


def restart_value():
    # Where a counter that is lost restarts (docs/protocol.md, "Streams"): a random 48-bit number
    # with its top bit set. Not 0 and not the clock (often unset, or wrong): the fleet would take
    # the new streams' messages for duplicates of the old ones.
    return 1 << 47 | int.from_bytes(os.urandom(6), "big")


class Counters:
    # The boot count and the stream counter `ses` (docs/protocol.md: +1 at boot, +1 per connect),
    # kept in state.json so no stream number is ever used twice. No usable state.json (a new
    # board, a wiped or damaged file): the counter restarts at restart_value().
    def __init__(self, path="state.json"):
        self.path = path
        saved = read_json(path)
        ses = saved.get("ses") if isinstance(saved, dict) else None
        self.restarted = not (isinstance(ses, int) and ses >= 0)  # start.py says so on the console
        if self.restarted:
            self.boots = 0
            self.ses = restart_value()
        else:
            boots = saved.get("boots")
            self.boots = boots if isinstance(boots, int) and boots >= 0 else 0
            self.ses = ses
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
