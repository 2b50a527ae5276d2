"""The Pi's own health figures: CPU, memory, disk, SoC temperature, system uptime.

Read from the Linux kernel's own files (/proc/stat, /proc/meminfo, /proc/uptime, the thermal
zone) and `os.statvfs`, with no compiled library: the agent then installs from pure-Python wheels
(and pydantic's core) on a 32-bit Pi too, where PyPI has no psutil wheel (docs/packaging.md). A
figure that cannot be read (a machine without /proc) is left out of the message, as the
temperature is where there is no thermal zone; the contract makes each of them optional.

The agent adds its own (uptime, version, queue depth, dropped, reconnects) and those of its roles.
"""

import os
import platform
from pathlib import Path
from typing import Any

PROC = Path("/proc")
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def hardware_description(model_path: Path = DEVICE_TREE_MODEL) -> str:
    """e.g. `Raspberry Pi 4 Model B Rev 1.4`; the platform on a machine without a device tree."""
    try:
        model = model_path.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    except OSError:
        model = ""
    return (model or f"{platform.system()} {platform.machine()}")[:200]


def cpu_busy_and_total(proc: Path = PROC) -> tuple[int, int] | None:
    """Clock ticks since boot from /proc/stat's `cpu` line: (busy, total). Idle is idle + iowait;
    guest time is already inside user time, so it is not added again."""
    try:
        with (proc / "stat").open() as stat:
            fields = stat.readline().split()
        if fields[0] != "cpu":
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    except (OSError, ValueError, IndexError):
        return None
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def memory_used_pct(proc: Path = PROC) -> float | None:
    """(MemTotal − MemAvailable) / MemTotal from /proc/meminfo: what `free` calls in use."""
    values: dict[str, int] = {}
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    total, available = values.get("MemTotal", 0), values.get("MemAvailable")
    if total <= 0 or available is None:
        return None
    return round(100 * (total - available) / total, 1)


def disk_used_pct(path: Path) -> float | None:
    """Use of the file system holding `path`, as `df` shows it: blocks reserved for root count
    as neither used nor available."""
    try:
        vfs = os.statvfs(path)
    except OSError:
        return None
    used = vfs.f_blocks - vfs.f_bfree
    usable = used + vfs.f_bavail
    return round(100 * used / usable, 1) if usable > 0 else None


def system_uptime_s(proc: Path = PROC) -> int | None:
    """Seconds since the machine booted (/proc/uptime: the kernel's clock, not the wall clock,
    so a Pi whose clock NTP sets late still says the right thing)."""
    try:
        return max(0, int(float((proc / "uptime").read_text().split()[0])))
    except (OSError, ValueError, IndexError):
        return None


class SystemHealth:
    """Samples the machine. CPU is the busy share since the previous sample (or since creation).

    Each sampler keeps its own CPU baseline, so several agents in one process do not disturb
    each other's figures.
    """

    def __init__(self, *, disk_path: Path, thermal_path: Path = THERMAL_ZONE, proc: Path = PROC) -> None:
        self.disk_path = disk_path
        self.thermal_path = thermal_path
        self.proc = proc
        self._cpu_last = cpu_busy_and_total(proc)

    def sample(self) -> dict[str, Any]:
        figures = {
            "cpu_pct": self._cpu_pct(),
            "mem_pct": memory_used_pct(self.proc),
            "disk_pct": disk_used_pct(self.disk_path),
            "sys_up_s": system_uptime_s(self.proc),
            "temp_c": self.soc_temperature(),
        }
        return {name: value for name, value in figures.items() if value is not None}

    def soc_temperature(self) -> float | None:
        """Degrees Celsius from the kernel's thermal zone, or None where there is none."""
        try:
            millidegrees = int(self.thermal_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return round(millidegrees / 1000, 1)

    def _cpu_pct(self) -> float | None:
        now = cpu_busy_and_total(self.proc)
        last, self._cpu_last = self._cpu_last, now
        if now is None:
            return None
        if last is None or now[1] <= last[1]:
            return 0.0
        return round(min(100.0, max(0.0, 100 * (now[0] - last[0]) / (now[1] - last[1]))), 1)
