"""`ioc-demo` started twice, or interrupted while it starts (issue 10, part 3): one line each,
naming the port and the setting; nothing left running. Real processes: the demo, the city's
devices and the extra `sim` Pi agents and board asked for, Ctrl-C sent to the demo's process
group as a terminal sends it."""

import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.demo.support import Demo, processes_of
from tests.support.wait import wait_for

PASSWORD = "correct horse battery staple"


def test_a_second_demo_says_why_in_one_line(tmp_path: Path, demo_env: dict[str, str], demos: list[Demo]) -> None:
    http_port, broker_port = demo_env["FLEET_HTTP_PORT"], demo_env["FLEET_EMBEDDED_BROKER_PORT"]
    first = Demo(tmp_path / "demo", demo_env, "--pis", "1", "--boards", "0")
    demos.append(first)
    wait_for(lambda: "Ctrl-C stops" in first.stdout() or first.proc.poll() is not None, timeout=60,
             what="the first demo ready")
    assert first.proc.poll() is None, first.err.read_text()

    again = Demo(tmp_path / "demo", demo_env, "--pis", "1", "--boards", "0")  # make demo, a second time
    assert again.proc.wait(60) == 1
    [line] = again.problems()
    assert line.startswith(f"ioc-demo: another demo (pid {first.proc.pid}) is running in "
                           f"{tmp_path / 'demo'} (status page port {http_port}, broker port {broker_port}); "
                           f"stop it (Ctrl-C in its terminal), or start a second one elsewhere: "
                           f"FLEET_DEMO_DIR={tmp_path / 'demo'}-2 FLEET_HTTP_PORT=")
    assert "FLEET_EMBEDDED_BROKER_PORT=" in line and line.endswith(" make demo")

    elsewhere = Demo(tmp_path / "other", demo_env, "--pis", "1", "--boards", "0")  # its own folder, same ports
    assert elsewhere.proc.wait(60) == 1
    [line] = elsewhere.problems()
    assert line.startswith(f"ioc-demo: port {http_port} (the status page) and port {broker_port} (the embedded "
                           "MQTT broker) are in use (another demo, or another program); choose another: ")
    # the settings it suggests work: a second demo starts with them
    suggested = dict(item.split("=") for item in line.split("choose another: ")[1].split()[:-2])
    assert set(suggested) == {"FLEET_HTTP_PORT", "FLEET_EMBEDDED_BROKER_PORT"}
    second = Demo(tmp_path / "other", {**demo_env, **suggested}, "--pis", "1", "--boards", "0")
    demos.append(second)
    wait_for(lambda: "Ctrl-C stops" in second.stdout() or second.proc.poll() is not None, timeout=60,
             what="the second demo ready on the suggested ports")
    assert second.proc.poll() is None, second.err.read_text()

    for demo in (first, second):
        assert demo.ctrl_c() == 0
        assert demo.problems() == [] and processes_of(demo.workdir) == []


def test_the_demo_says_how_to_add_a_person(tmp_path: Path, demo_env: dict[str, str], demos: list[Demo]) -> None:
    demo = Demo(tmp_path / "demo", demo_env, "--pis", "0", "--boards", "0")
    demos.append(demo)
    wait_for(lambda: "user-add NAME" in demo.stdout() or demo.proc.poll() is not None, timeout=60,
             what="the demo ready")
    [hint] = [line for line in demo.stdout().splitlines() if "user-add NAME" in line]
    command = shlex.split(hint.split("database: ", 1)[1].replace("NAME", "bob"))
    variable, value = command[0].split("=", 1)
    added = subprocess.run([*command[1:], "--password-stdin"], input=PASSWORD + "\n", text=True,
                           capture_output=True, env={**os.environ, variable: value}, timeout=60)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"fleet: user bob (ops) added to sqlite://{tmp_path / 'demo' / 'fleet.sqlite3'}"
    response = httpx.post(f"http://127.0.0.1:{demo_env['FLEET_HTTP_PORT']}/api/auth/login",
                          json={"username": "bob", "password": PASSWORD}, timeout=15)
    assert response.status_code == 200, response.text


def _exists(path: Path) -> Callable[[], bool]:
    return path.exists


@pytest.mark.parametrize("moment", ["demo-pi-01.log", "demo-esp-01/app_a/app.mpy"],
                         ids=["agents starting", "board firmware compiling"])
def test_ctrl_c_during_start_up(moment: str, tmp_path: Path, demo_env: dict[str, str], demos: list[Demo]) -> None:
    workdir = tmp_path / "demo"
    demo = Demo(workdir, demo_env, "--pis", "2", "--boards", "1")
    demos.append(demo)
    wait_for(lambda: (workdir / moment).exists() or demo.proc.poll() is not None, timeout=60, interval=0.005,
             what=moment)
    assert demo.ctrl_c() == 130, demo.err.read_text()
    [line] = demo.problems()
    assert line.startswith("ioc-demo: interrupted during start-up; stopped what had started ("), line
    assert "Ctrl-C stops" not in demo.stdout()  # it did not go on starting
    assert processes_of(workdir) == []
