"""What the demo's devices sense: the world around them, played by the demo.

- `Sds011Line`: a pseudo-terminal pair; the demo writes real SDS011 frames (edge.serialio.sds011)
  into one end, the sensor Pi reads the other as its serial port.
- `feed_air`: PM2.5/PM10 for Đồng Xoài over a day squeezed into `AIR_CYCLE_S` (a morning and an
  evening traffic peak above the alarm level, clean air at night), one frame a second as the
  SDS011 sends in its active mode.
- `replay_hostapd`: the lines of `data/hostapd-market.log` (hostapd's log format; the MACs are
  made up), appended one by one with today's time to the log the hotspot Pi follows.
- `feed_lamps`: each street-light board's lamp current (`io/current_ma`) follows the PWM level its
  firmware sets (`io/lamp`), as a working lamp would; without it the board would report a lamp
  failure whenever its program switches the lamp on.

Every feed is a coroutine the demo runs as a named task and cancels at shutdown.
"""

import asyncio
import contextlib
import logging
import math
import os
import random
import time
import tty
from collections.abc import Sequence
from pathlib import Path

from edge.serialio.sds011 import frame

log = logging.getLogger(__name__)

HOSTAPD_LINES = Path(__file__).parent / "data" / "hostapd-market.log"
HOSTAPD_LOG_MAX_BYTES = 1 << 20  # at this size the log is rotated (renamed to .1), as logrotate would
AIR_CYCLE_S = 600.0  # one day of air in ten minutes
AIR_PERIOD_S = 1.0  # an SDS011 in active mode sends a frame every second
LAMP_MA_FULL = 350  # a 80 W LED street light at 230 V
LAMP_POLL_S = 0.5


class Sds011Line:
    """A pseudo-terminal pair: the demo writes frames to `master`, the sensor reads `port`."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        # the slave end stays open here too: the line does not hang up while the agent reopens it
        self.port = os.ttyname(self._slave)
        self.dropped = 0

    def write(self, data: bytes) -> None:
        """Send bytes; when nobody reads, the pty's own buffer is the bound and the frame is lost,
        as it would be on a serial line."""
        try:
            os.write(self.master, data)
        except BlockingIOError:
            self.dropped += 1

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def air_at(t_s: float, rng: random.Random) -> tuple[float, float]:
    """(PM2.5, PM10) in µg/m³ at `t_s` seconds into the demo: a cycle starts at night (about 18
    µg/m³ of PM2.5), a morning traffic peak reaches about 61 and an evening one about 52 (the
    demo's alarm is at 50, QCVN 05:2013's 24-hour limit)."""
    phase = 2 * math.pi * (t_s % AIR_CYCLE_S) / AIR_CYCLE_S
    pm25 = 30 + 22 * math.sin(phase) ** 2 * (1.4 if phase < math.pi else 1.0) - 12 * math.cos(phase) ** 8
    pm25 = max(3.0, pm25 + rng.gauss(0, 1.2))
    return pm25, pm25 * 1.55 + rng.gauss(0, 2.0)


async def feed_air(line: Sds011Line, *, period_s: float = AIR_PERIOD_S, seed: int = 7) -> None:
    rng = random.Random(seed)
    start = time.monotonic()
    while True:
        pm25, pm10 = air_at(time.monotonic() - start, rng)
        line.write(frame(pm25, max(pm10, pm25)))
        await asyncio.sleep(period_s)


def _stamp(line: str, now: time.struct_time) -> str:
    """The recorded line with today's time in its syslog prefix ("Mar  3 06:02:17 ")."""
    return time.strftime("%b %e %H:%M:%S", now) + line[15:] if len(line) > 15 else line


async def replay_hostapd(log_path: Path, *, period_s: float) -> None:
    """Append the recorded lines to `log_path`, one every `period_s`, round and round."""
    lines = HOSTAPD_LINES.read_text().splitlines()
    i = 0
    while True:
        text = _stamp(lines[i % len(lines)], time.localtime()) + "\n"
        await asyncio.to_thread(_append, log_path, text)
        i += 1
        await asyncio.sleep(period_s)


def _append(path: Path, text: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size >= HOSTAPD_LOG_MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    with path.open("a") as out:
        out.write(text)


async def feed_lamps(boards: Sequence[Path], *, poll_s: float = LAMP_POLL_S) -> None:
    """Keep each board's `io/current_ma` at what its lamp's PWM level (`io/lamp`, 0..1000) draws."""
    written: dict[Path, str] = {}
    while True:
        for board in boards:
            try:
                level = int((board / "io" / "lamp").read_text() or 0)
            except (FileNotFoundError, ValueError):
                level = 0
            current = str(round(LAMP_MA_FULL * max(0, min(level, 1000)) / 1000))
            if written.get(board) != current:
                (board / "io").mkdir(exist_ok=True)
                tmp = board / "io" / "current_ma.tmp"
                tmp.write_text(current)
                os.replace(tmp, board / "io" / "current_ma")  # never half a number for the firmware
                written[board] = current
        await asyncio.sleep(poll_s)
