"""Run the edge agent's CLI and write down every (ses, seq) stamp it takes, one line each.

    python tests/edge/stamp_tap.py TAP_FILE --config agent.toml [--log-level ...]

Test instrumentation for the full-disk tests: the tap file (on another file system than the
agent's state folder) is what the agent stamped, so the test can tell what must arrive at the
broker, stay queued or be counted as dropped. It uses only `Uplink.emit` and `Stamper`, which the
code before the full-disk work has too, so the same test measures an older checkout (PYTHONPATH).
A stamp is written when the agent takes it, even if queueing the message then fails.
"""

import sys
from pathlib import Path
from typing import Any


def install_tap(path: Path) -> None:
    from edge import uplink

    out = path.open("a", buffering=1)
    emit = uplink.Uplink.emit

    def tapped(self: Any, suffix: str, fields: Any) -> None:
        ses, seq = self.stamper.ses, self.stamper.next_seq
        try:
            emit(self, suffix, fields)
        finally:
            if (self.stamper.ses, self.stamper.next_seq) == (ses, seq + 1):
                out.write(f"{ses} {seq} {suffix}\n")

    uplink.Uplink.emit = tapped  # type: ignore[method-assign]


if __name__ == "__main__":
    install_tap(Path(sys.argv[1]))
    from edge.cli import main

    sys.exit(main(sys.argv[2:]))
