"""System health figures from the real machine, and the SoC temperature file."""

import time
from pathlib import Path

import pytest

from edge.health import SystemHealth, hardware_description


def test_sample_has_the_pi_figures(tmp_path: Path) -> None:
    figures = SystemHealth(disk_path=tmp_path, thermal_path=tmp_path / "absent").sample()
    for name in ("cpu_pct", "mem_pct", "disk_pct"):
        assert 0 <= figures[name] <= 100, name
    assert figures["sys_up_s"] >= 0
    assert "temp_c" not in figures, "no thermal zone, no temperature"


def test_temperature_comes_from_the_thermal_zone(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert SystemHealth(disk_path=tmp_path, thermal_path=zone).sample()["temp_c"] == 48.3


def test_hardware_description_reads_the_device_tree_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert hardware_description(model) == "Raspberry Pi 4 Model B Rev 1.4"
    assert hardware_description(tmp_path / "absent")  # falls back to the platform


def write_proc(proc: Path, *, busy: int, idle: int, total_kb: int = 4_000_000, available_kb: int = 3_000_000,
               uptime: str = "12345.67 40000.00") -> None:
    proc.mkdir(exist_ok=True)
    # user nice system idle iowait irq softirq steal guest guest_nice: busy in user, idle split with iowait
    (proc / "stat").write_text(f"cpu  {busy} 0 0 {idle - 10} 10 0 0 0 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    (proc / "meminfo").write_text(f"MemTotal:       {total_kb} kB\nMemFree:          100000 kB\n"
                                  f"MemAvailable:   {available_kb} kB\nBuffers:           1000 kB\n")
    (proc / "uptime").write_text(uptime + "\n")


def test_figures_come_from_the_kernels_files(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    write_proc(proc, busy=1000, idle=9000)
    health = SystemHealth(disk_path=tmp_path, thermal_path=tmp_path / "absent", proc=proc)
    write_proc(proc, busy=1300, idle=9700, total_kb=4_000_000, available_kb=1_000_000)
    figures = health.sample()
    assert figures["cpu_pct"] == 30.0  # 300 busy ticks of 1000; guest (7) is inside user, not added
    assert figures["mem_pct"] == 75.0  # (total - available) / total
    assert figures["sys_up_s"] == 12345
    assert health.sample()["cpu_pct"] == 0.0  # no tick since the previous sample


def test_a_machine_without_proc_leaves_those_figures_out(tmp_path: Path) -> None:
    figures = SystemHealth(disk_path=tmp_path, thermal_path=tmp_path / "absent", proc=tmp_path / "none").sample()
    assert set(figures) == {"disk_pct"}
    proc = tmp_path / "garbled"
    proc.mkdir()
    for name in ("stat", "meminfo", "uptime"):
        (proc / name).write_text("not what the kernel writes\n")
    assert set(SystemHealth(disk_path=tmp_path, thermal_path=tmp_path / "absent", proc=proc).sample()) == {"disk_pct"}


def test_figures_agree_with_psutil_on_this_machine(tmp_path: Path) -> None:
    """The agent no longer needs psutil (no wheel for a 32-bit Pi); where it is installed (the
    fleet's broker brings it here) it reads the same kernel files, so the figures must agree."""
    psutil = pytest.importorskip("psutil")
    figures = SystemHealth(disk_path=tmp_path, thermal_path=tmp_path / "absent").sample()
    assert abs(figures["mem_pct"] - psutil.virtual_memory().percent) < 2.0  # memory moves between the reads
    assert abs(figures["disk_pct"] - psutil.disk_usage(str(tmp_path)).percent) < 0.5
    assert abs(figures["sys_up_s"] - (time.time() - psutil.boot_time())) < 3
