"""The agent on a Pi that installed none of the roles' extras (issue 10, part 1): OpenCV, numpy,
pymodbus, pyserial and httpx unimportable. The sim and hotspot roles run; a config naming the
camera says, in one line, which extra to install."""

import signal
import subprocess
import sys
from pathlib import Path

from tests.edge.helpers import until
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe

RUNNER = Path(__file__).with_name("no_extras.py")


def _config(tmp_path: Path, device_id: str, url: str, roles: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'device_id = "{device_id}"\nstate_dir = "{tmp_path / "state"}"\nhealth_period_s = 1\n'
        f'[broker]\nurl = "{url}"\nbackoff_min_s = 0.05\nbackoff_max_s = 0.5\n{roles}')
    return path


def _agent(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(RUNNER), "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


async def test_sim_and_hotspot_run_without_the_extras(tmp_path: Path, mosquitto: Mosquitto, device_id: str,
                                                      probe: Probe) -> None:
    log = tmp_path / "hostapd.log"
    log.write_text("")
    config = _config(tmp_path, device_id, mosquitto.url,
                     '[roles.sim]\nperiod_s = 0.5\n'
                     f'[roles.hotspot]\nsource = "log"\nlog_path = "{log}"\n')
    agent = _agent(config)
    try:
        births = await until(lambda: probe.payloads("birth"), "a birth")
        assert sorted(births[-1]["roles"]) == ["hotspot", "sim"]
        await until(lambda: [t for t in probe.payloads("telemetry") if t.get("role") == "sim"], "sim telemetry")
        await until(lambda: [h for h in probe.payloads("health") if "hotspot" in h.get("roles", {})],
                    "health with the hotspot's figures")
    finally:
        agent.send_signal(signal.SIGTERM)
        _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert "Traceback" not in err


def test_the_camera_role_names_its_extra(tmp_path: Path, device_id: str) -> None:
    config = _config(tmp_path, device_id, "mqtt://127.0.0.1:9", '[roles.camera]\nsource = "rtsp://127.0.0.1/x"\n')
    agent = _agent(config)
    out, err = agent.communicate(timeout=60)
    assert agent.returncode == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "roles.camera" in lines[0] and "cv2" in lines[0] and "pip install 'ioc-edge[camera]'" in lines[0]
