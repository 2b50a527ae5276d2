"""The demo as a person runs it: `ioc-demo` in its own process group, Ctrl-C as a terminal sends it."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _as_from_a_terminal() -> None:  # in the child: Ctrl-C does what it does in a shell
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Demo:
    """`ioc-demo` in its own process group; stdout and stderr in files."""

    def __init__(self, workdir: Path, env: dict[str, str], *args: str, python: str = sys.executable) -> None:
        self.workdir = workdir
        logs = workdir.parent / f"{workdir.name}-logs"
        logs.mkdir(exist_ok=True)
        runs = len(list(logs.glob("*.out")))
        self.out, self.err = logs / f"{runs}.out", logs / f"{runs}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [python, "-m", "demo", "--workdir", str(workdir), *args], cwd=ROOT,
                env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_as_from_a_terminal)

    def stdout(self) -> str:
        return self.out.read_text()

    def problems(self) -> list[str]:
        """stderr without the log lines a running fleet writes."""
        return [line for line in self.err.read_text().splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.ctrl_c()


def processes_of(workdir: Path) -> list[str]:
    """Processes whose command line or current folder is in the demo's folder (agents, boards,
    compilers, players, watchdog shells)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if str(workdir) in command or cwd.startswith(str(workdir)):
            found.append(f"{pid} {command}")
    return found
