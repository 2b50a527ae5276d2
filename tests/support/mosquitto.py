"""A private Mosquitto per test: its own port, config and folder, stoppable and restartable."""

import glob
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.broker_auth.limits import MOSQUITTO_MAX_PACKET_SIZE

if TYPE_CHECKING:
    from tests.support.tls import TlsFiles

MOSQUITTO = "/usr/sbin/mosquitto"
DYNSEC_PLUGIN = next(iter(sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))),
                     "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, *, up: bool = True, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.02)
    raise TimeoutError(f"port {port} did not go {'up' if up else 'down'} within {timeout}s")


class Mosquitto:
    """A real mosquitto process on 127.0.0.1:<free port>, with persistence in its own folder.

    `secure=True`: the production set-up. Anonymous access is off and accounts live in the
    dynamic-security plugin, with `admin` (user, password) as its administrator (the fleet's
    account); with `tls` files, a second listener on `tls_port` speaks TLS.

    `max_queued_messages`: what the broker holds per persistent session beyond the messages in
    flight (0: no limit; Mosquitto's own default is 1000), docs/fleet.md "Sizing the broker".
    """

    def __init__(self, workdir: Path, *, extra_conf: str = "", secure: bool = False,
                 admin: tuple[str, str] = ("fleet-admin", "fleet-admin-test-password"),
                 tls: "TlsFiles | None" = None, max_queued_messages: int = 10_000) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.conf = workdir / "mosquitto.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        self.admin = admin
        self.admin_url = f"mqtt://{admin[0]}:{admin[1]}@127.0.0.1:{self.port}"
        self.tls_port = free_port() if tls else None
        security = "allow_anonymous true\n"
        self.dynsec_file = workdir / "dynamic-security.json"
        if secure:
            dynsec = self.dynsec_file
            if not dynsec.exists():
                # umask 077: the file holds the accounts' password hashes, readable by its owner
                # only from the first byte (docs/identity.md); Mosquitto rewrites it in place
                subprocess.run(["sh", "-c", 'umask 077 && exec mosquitto_ctrl dynsec init "$@"', "init",
                                str(dynsec), admin[0], admin[1]], check=True, capture_output=True)
            security = ("allow_anonymous false\n"
                        f"plugin {DYNSEC_PLUGIN}\n"
                        f"plugin_opt_config_file {dynsec}\n"
                        "per_listener_settings false\n"
                        # the production limits (docs/identity.md): no packet over the fleet's
                        # largest message, retained ones included
                        f"max_packet_size {MOSQUITTO_MAX_PACKET_SIZE}\n")
        if tls:
            security += (f"listener {self.tls_port} 127.0.0.1\n"
                         f"cafile {tls.ca}\ncertfile {tls.cert}\nkeyfile {tls.key}\n"
                         "tls_version tlsv1.2\n")
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # as root, mosquitto would switch to its own user and could not write persistence here
            "user root\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            f"max_queued_messages {max_queued_messages}\n"
            f"{extra_conf}\n"
            f"{security}"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mosquitto.log"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port)
        if self.tls_port:
            wait_port(self.tls_port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        wait_port(self.port, up=False)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
