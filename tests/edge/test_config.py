"""The config file: validation, one-line errors from the real CLI, no secrets in them."""

import subprocess
from pathlib import Path

import pytest

import edge
from edge.config import AgentConfig, load_config, parse_config, write_config
from edge.errors import ConfigError
from tests.edge.helpers import agent_command

EXAMPLE = Path(edge.__file__).parent / "example-config.toml"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_the_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.device_id == "pi-dx-0001"
    assert (config.broker.host, config.broker.port) == ("127.0.0.1", 1883)
    assert config.queue.max_messages == 100_000
    assert set(config.roles) == {"sim"}


def test_written_config_reads_back_the_same(tmp_path: Path) -> None:
    config = parse_config(
        {
            "device_id": "pi-w-1",
            "state_dir": str(tmp_path / "s"),
            "broker": {"url": "mqtt://10.0.0.2:1884", "username": "pi-w-1", "password": 'p"w\\x'},
            "roles": {"sim": {"period_s": 0.25}},
        }
    )
    path = write_config(config, tmp_path / "c" / "agent.toml")
    again = load_config(path)
    assert again == config
    assert again.broker.password is not None and again.broker.password.get_secret_value() == 'p"w\\x'
    assert path.stat().st_mode & 0o077 == 0, "the file holds a password: owner only"


def test_relative_state_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'device_id = "pi-1"\nstate_dir = "state"\n')
    assert load_config(path).state_dir == tmp_path / "state"


def test_the_fleet_table_path_and_ca_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'device_id = "pi-1"\nstate_dir = "s"\n[fleet]\nurl = "https://fleet.example:8443/ioc/"\n'
                           'ca_file = "ca.pem"\n')
    fleet = load_config(path).fleet
    assert fleet is not None
    assert fleet.url == "https://fleet.example:8443/ioc" and fleet.ca_file == tmp_path / "ca.pem"
    assert (fleet.timeout_s, fleet.backoff_min_s, fleet.backoff_max_s) == (20.0, 1.0, 300.0)
    assert load_config(write(tmp_path, 'device_id = "pi-1"\nstate_dir = "s"\n')).fleet is None


def test_cli_a_fleet_without_the_broker_password_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, 'device_id = "pi-1"\nstate_dir = "s"\n[fleet]\nurl = "http://127.0.0.1:9"\n')
    done = run_cli(*agent_command(path))
    assert done.returncode == 2
    assert done.stderr == "edge-agent: fleet: the device logs in to the fleet with broker.password, which is not set\n"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_BROKER__PASSWORD", "from-env")
    path = write(tmp_path, 'device_id = "pi-1"\nstate_dir = "s"\n[broker]\npassword = "from-file"\n')
    config = load_config(path)
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == "from-env"
    assert "from-env" not in repr(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('device_id = "Pi_01"\nstate_dir = "s"\n', "device_id: must match"),
        ('state_dir = "s"\n', "device_id: Field required"),
        ('device_id = "pi-1"\nstate_dir = "s"\n[broker]\nurl = "http://x:1"\n', "broker.url: must look like"),
        ('device_id = "pi-1"\nstate_dir = "s"\nhealth_period_s = 0\n', "health_period_s"),
        ('device_id = "pi-1"\nstate_dir = "s"\ncolour = "red"\n', "colour: Extra inputs"),
        ('device_id = "pi-1"\nstate_dir = "s"\n[queue]\nmax_messages = 1\n', "queue.max_messages"),
        ('device_id = "pi-1"\nstate_dir = [\n', "not valid TOML"),
        ('device_id = "pi-1"\nstate_dir = "s"\n[fleet]\nurl = "mqtt://x"\n', "fleet.url: must look like"),
        ('device_id = "pi-1"\nstate_dir = "s"\n[fleet]\nurl = "https://pi:pw@x"\n', "fleet.url: must not carry"),
        ('device_id = "pi-1"\nstate_dir = "s"\n[fleet]\nurl = "https://x/?a=1"\n', "fleet.url: must not have a query"),
        ('device_id = "pi-1"\nstate_dir = "s"\n[fleet]\nurl = "https://x:port"\n', "fleet.url: has a bad port"),
        ('device_id = "pi-1"\nstate_dir = "s"\n[fleet]\nurl = "http://x"\nca_file = "ca.pem"\n', "ca_file is set but"),
        ('device_id = "pi-1"\nstate_dir = "s"\n[fleet]\nca_file = "ca.pem"\n', "fleet.url: Field required"),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))


def test_cli_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run_cli(*agent_command(tmp_path / "nope.toml"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"edge-agent: cannot read config {tmp_path / 'nope.toml'}: No such file or directory"
    ]


def test_cli_bad_device_id_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, 'device_id = "Not Valid"\nstate_dir = "s"\n')
    done = run_cli(*agent_command(path))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"edge-agent: {path}: device_id: must match")
    assert "Traceback" not in done.stderr


def test_cli_unknown_role_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, 'device_id = "pi-1"\nstate_dir = "s"\n[roles.laser]\npower = 9\n')
    done = run_cli(*agent_command(path))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-agent: roles.laser: no such role (known: ")
    assert "sim" in lines[0] and "camera" in lines[0]


def test_cli_bad_role_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, 'device_id = "pi-1"\nstate_dir = "s"\n[roles.sim]\nperiod_s = -1\n')
    done = run_cli(*agent_command(path))
    assert done.returncode == 2
    assert done.stderr.startswith("edge-agent: roles.sim.period_s:"), done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_cli_error_never_shows_the_password(tmp_path: Path) -> None:
    secret = "hunter2-very-secret"
    path = write(
        tmp_path,
        f'device_id = "pi-1"\nstate_dir = "s"\n[broker]\npassword = "{secret}"\nkeepalive_s = "soon"\n',
    )
    done = run_cli(*agent_command(path))
    assert done.returncode == 2
    assert "keepalive_s" in done.stderr
    assert secret not in done.stderr + done.stdout


def test_cli_version() -> None:
    done = run_cli(*agent_command(Path("unused"), "--version"))
    assert done.returncode == 0
    assert done.stdout.strip() == f"edge-agent {edge.__version__}"


def test_config_is_immutable(tmp_path: Path) -> None:
    config = parse_config({"device_id": "pi-1", "state_dir": str(tmp_path)})
    assert isinstance(config, AgentConfig)
    with pytest.raises(ValueError):
        config.health_period_s = 5  # type: ignore[misc]


def test_other_broker_urls_are_tried_after_the_first_and_share_its_scheme() -> None:
    config = parse_config({"device_id": "pi-dx-0001", "state_dir": "/tmp/x", "broker": {
        "url": "mqtt://10.0.0.1:1883", "other_urls": ["mqtt://10.0.0.2:1883", "mqtt://10.0.0.3"]}})
    assert config.broker.urls == ("mqtt://10.0.0.1:1883", "mqtt://10.0.0.2:1883", "mqtt://10.0.0.3")
    with pytest.raises(ConfigError, match="same scheme"):
        parse_config({"device_id": "pi-dx-0001", "state_dir": "/tmp/x", "broker": {
            "url": "mqtts://10.0.0.1:8883", "other_urls": ["mqtt://10.0.0.2:1883"]}})
    with pytest.raises(ConfigError, match="credentials"):
        parse_config({"device_id": "pi-dx-0001", "state_dir": "/tmp/x", "broker": {"other_urls": ["mqtt://u:p@10.0.0.2"]}})
