"""The Pi's own health figures: CPU, memory, disk, SoC temperature, system uptime.

The agent adds its own (uptime, version, queue depth, dropped, reconnects) and those of its roles.
"""

import platform
import time
from pathlib import Path
from typing import Any

import psutil

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def hardware_description(model_path: Path = DEVICE_TREE_MODEL) -> str:
    """e.g. `Raspberry Pi 4 Model B Rev 1.4`; the platform on a machine without a device tree."""
    try:
        model = model_path.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    except OSError:
        model = ""
    return (model or f"{platform.system()} {platform.machine()}")[:200]


def _cpu_busy_and_total() -> tuple[float, float]:
    times = psutil.cpu_times()
    total = float(sum(times))
    idle = float(times.idle) + float(getattr(times, "iowait", 0.0))
    return total - idle, total


class SystemHealth:
    """Samples the machine. CPU is the busy share since the previous sample (or since creation).

    Each sampler keeps its own CPU baseline, so several agents in one process do not disturb
    each other's figures.
    """

    def __init__(self, *, disk_path: Path, thermal_path: Path = THERMAL_ZONE) -> None:
        self.disk_path = disk_path
        self.thermal_path = thermal_path
        self._cpu_last = _cpu_busy_and_total()

    def sample(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "cpu_pct": self._cpu_pct(),
            "mem_pct": round(float(psutil.virtual_memory().percent), 1),
            "disk_pct": round(float(psutil.disk_usage(str(self.disk_path)).percent), 1),
            "sys_up_s": max(0, int(time.time() - float(psutil.boot_time()))),
        }
        temp = self.soc_temperature()
        if temp is not None:
            figures["temp_c"] = temp
        return figures

    def soc_temperature(self) -> float | None:
        """Degrees Celsius from the kernel's thermal zone, or None where there is none."""
        try:
            millidegrees = int(self.thermal_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return round(millidegrees / 1000, 1)

    def _cpu_pct(self) -> float:
        busy, total = _cpu_busy_and_total()
        last_busy, last_total = self._cpu_last
        self._cpu_last = (busy, total)
        if total <= last_total:
            return 0.0
        return round(min(100.0, max(0.0, 100 * (busy - last_busy) / (total - last_total))), 1)
