"""Helpers of the firmware tests: MicroPython scripts, host boards, contract-checked observation."""

import json
import re
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contract import parse_upstream
from provisioning.hostboard import (
    MICROPYTHON,
    console_text,
    prepare_board,
    start_board,
    stop_board,
)
from tests.support.mqtt_probe import Probe
from tests.support.tls import TlsFiles
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
SLOT = REPO / "firmware" / "app_a"
MP_SCRIPTS = Path(__file__).parent / "mp"
EXAMPLES = REPO / "contract" / "vectors" / "examples"

# Fast timers so the end-to-end tests take seconds: health every second, a broker that notices
# a dead link within a few seconds, retries capped at 2 s, a boot judged good after 1 s.
FAST = {"health_period_s": 1, "keepalive_s": 5, "backoff_min_s": 1, "backoff_max_s": 2, "boot_good_s": 1}


def ca_der(tls: TlsFiles) -> bytes:
    """The test CA as the board holds it (ca.der: DER, as provisioning writes it)."""
    return ssl.PEM_cert_to_DER_cert(tls.ca.read_text())


def run_mp(
    script: str, *args: str, heapsize: str = "64k", timeout: float = 30, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run one of the MicroPython test scripts in tests/firmware/mp under the real interpreter."""
    return subprocess.run(
        [str(MICROPYTHON), "-X", f"heapsize={heapsize}", str(MP_SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


class HostBoard:
    """One simulated ESP32: its folder, its process, its console."""

    def __init__(self, path: Path, device_id: str, port: int, *, precompiled: bool = True,
                 **cfg: Any) -> None:
        self.device_id = device_id
        self.path = prepare_board(path, device_id, "127.0.0.1", port, precompiled=precompiled, **{**FAST, **cfg})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, heapsize: str = "64k") -> "HostBoard":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = start_board(self.path, heapsize)
        return self

    def stop(self) -> int:
        assert self.proc is not None
        return stop_board(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait_exit(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def console(self) -> str:
        return console_text(self.path)

    def wait_console(self, pattern: str, *, count: int = 1, timeout: float = 15) -> list[re.Match[str]]:
        """Wait until `pattern` has matched `count` console lines; returns the matches."""

        def matches() -> list[re.Match[str]]:
            found = list(re.finditer(pattern, self.console()))
            return found if len(found) >= count else []

        return wait_for(matches, timeout=timeout, what=f"{count} x {pattern!r} on the console")

    def file(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def io(self, name: str) -> str:
        path = self.path / "io" / name
        return path.read_text() if path.exists() else ""

    def set_io(self, name: str, value: object) -> None:
        (self.path / "io").mkdir(exist_ok=True)
        tmp = self.path / "io" / (name + ".tmp")
        tmp.write_text(str(value))
        tmp.rename(self.path / "io" / name)

    def set_clock(self, unix_ms: int | None, rate: int = 1) -> None:
        """The board's clock reads unix_ms now (None: not set), running `rate` times as fast."""
        body = {"unix_ms": unix_ms, "real_ms": time.time_ns() // 1_000_000, "rate": rate}
        tmp = self.path / "clock.json.tmp"
        tmp.write_text(json.dumps(body))
        tmp.rename(self.path / "clock.json")


def upstream(observer: Probe, suffix: str) -> list[dict[str, Any]]:
    """What the device sent on `suffix`, each message checked by the fleet's contract parser."""
    raw = [(t, p) for t, p, _ in list(observer.messages) if t.endswith("/" + suffix) and p]
    return [parse_upstream(t, p).body for t, p in raw]


def wait_upstream(
    observer: Probe,
    suffix: str,
    condition: Callable[[dict[str, Any]], bool] = lambda m: True,
    *,
    count: int = 1,
    timeout: float = 15,
) -> list[dict[str, Any]]:
    """Wait until `count` messages on `suffix` satisfy `condition`; returns those messages."""

    def found() -> list[dict[str, Any]]:
        hits = [m for m in upstream(observer, suffix) if condition(m)]
        return hits if len(hits) >= count else []

    return wait_for(found, timeout=timeout, what=f"{count} {suffix} message(s)")


def session_probe(port: int, topic_filter: str) -> Probe:
    """A Probe with a persistent session: it sees what a device sends across a broker restart."""
    return Probe(port, topic_filter, persistent=True)
