"""System health figures from the real machine, and the SoC temperature file."""

from pathlib import Path

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
