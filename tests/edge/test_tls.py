"""The agent's mqtts link verifies the broker: a certificate from another CA, or for another host,
ends the handshake before the agent sends anything, so its password never leaves (issue 8, finding 3).

The attacker here is a TLS server that completes handshakes with its own certificate and records
every byte it decrypts: the man in the middle a Pi would meet on a hostile network.
"""

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.agent import run_agent
from edge.cli import main as edge_agent_main
from edge.config import AgentConfig, parse_config
from edge.errors import ConfigError
from tests.edge.helpers import until
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe
from tests.support.tls import make_tls


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Pki:
    """A CA of its own that can sign server certificates for any names."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(self.now - datetime.timedelta(minutes=5))
                     .not_valid_after(self.now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca = folder / "ca.pem"
        self.ca.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server(self, label: str, *, ips: tuple[str, ...] = (), dns: tuple[str, ...] = ()) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.DNSName(host) for host in dns]
        cert = (x509.CertificateBuilder().subject_name(_name((ips + dns)[0])).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self.now - datetime.timedelta(minutes=5))
                .not_valid_after(self.now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path, key_path = self.folder / f"{label}.pem", self.folder / f"{label}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


@dataclass
class TlsTrap:
    """Accepts TCP, completes a TLS handshake with its certificate when the client lets it, and keeps
    whatever the client then sends. It never answers: a client that trusts it retries and sends again."""

    cert: Path
    key: Path
    handshakes_ok: int = 0
    handshakes_refused: int = 0
    received: bytearray = field(default_factory=bytearray)
    port: int = 0

    def __post_init__(self) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(self.cert, self.key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tls-trap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with raw:
                raw.settimeout(5)
                try:
                    tls = self._context.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError):
                    self.handshakes_refused += 1
                    continue
                self.handshakes_ok += 1
                with contextlib.suppress(OSError), tls:
                    tls.settimeout(1)
                    while len(self.received) < 65536:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        self.received += chunk

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(10)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "city-ca", "IOC city CA")


@pytest.fixture
def traps() -> Iterator[list[TlsTrap]]:
    made: list[TlsTrap] = []
    yield made
    for trap in made:
        trap.close()


def tls_config(tmp_path: Path, port: int, ca_file: Path | None, password: str, host: str = "127.0.0.1") -> AgentConfig:
    broker: dict[str, Any] = {"url": f"mqtts://{host}:{port}", "username": "pi-tls-test", "password": password,
                              "backoff_min_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 3}
    if ca_file is not None:
        broker["ca_file"] = str(ca_file)
    return parse_config({"device_id": "pi-tls-test", "state_dir": str(tmp_path / f"state-{uuid.uuid4().hex[:6]}"),
                         "broker": broker})


async def run_against(trap: TlsTrap, config: AgentConfig) -> None:
    """Run the agent until it has tried the trap twice (so a retry is covered too)."""
    stop = asyncio.Event()
    agent = asyncio.create_task(run_agent(config, stop=stop), name="agent-under-attack")
    try:
        await until(lambda: trap.handshakes_refused + trap.handshakes_ok >= 2, "two connection attempts", within=60)
    finally:
        stop.set()
        await asyncio.wait_for(agent, 30)


@pytest.mark.parametrize("trusted", ["the city's CA file", "the system's CAs"])
async def test_a_broker_certificate_from_another_ca_is_refused_before_the_password(
        tmp_path: Path, pki: Pki, traps: list[TlsTrap], trusted: str) -> None:
    other = Pki(tmp_path / "attacker-ca", "IOC city CA")  # same name, other key
    trap = TlsTrap(*other.server("attacker", ips=("127.0.0.1",), dns=("localhost",)))
    traps.append(trap)
    password = f"pw-{uuid.uuid4().hex}"
    config = tls_config(tmp_path, trap.port, pki.ca if trusted == "the city's CA file" else None, password)
    await run_against(trap, config)
    assert password.encode() not in trap.received
    assert trap.handshakes_ok == 0 and bytes(trap.received) == b""


async def test_a_certificate_of_the_right_ca_for_another_host_is_refused(
        tmp_path: Path, pki: Pki, traps: list[TlsTrap]) -> None:
    trap = TlsTrap(*pki.server("elsewhere", dns=("evil.example",)))
    traps.append(trap)
    password = f"pw-{uuid.uuid4().hex}"
    await run_against(trap, tls_config(tmp_path, trap.port, pki.ca, password))
    assert password.encode() not in trap.received
    assert trap.handshakes_ok == 0 and bytes(trap.received) == b""


async def test_the_trap_does_see_the_password_of_a_client_that_trusts_it(
        tmp_path: Path, pki: Pki, traps: list[TlsTrap]) -> None:
    """The control: the same trap with a certificate the agent does trust reads the password from
    CONNECT. So the two tests above would see a leak if the agent had one."""
    trap = TlsTrap(*pki.server("broker", ips=("127.0.0.1",)))
    traps.append(trap)
    password = f"pw-{uuid.uuid4().hex}"
    await run_against(trap, tls_config(tmp_path, trap.port, pki.ca, password))
    assert trap.handshakes_ok >= 2 and password.encode() in trap.received


async def test_over_tls_to_mosquitto_with_a_ca_of_its_own(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "mosquitto", tls=tls)
    broker.start()
    assert broker.tls_port is not None
    probe = Probe(broker.port, "ioc/v1/d/pi-tls-test/#")
    stop = asyncio.Event()
    try:
        config = tls_config(tmp_path, broker.tls_port, tls.ca, "any")  # an open broker: the password is unused
        agent = asyncio.create_task(run_agent(config, stop=stop), name="agent-over-tls")
        await until(lambda: probe.payloads("birth"), "the birth over TLS", within=30)
        stop.set()
        assert await asyncio.wait_for(agent, 30) == 0
    finally:
        probe.close()
        broker.kill()


def test_a_missing_or_wrong_ca_file_stops_the_agent_with_one_line(tmp_path: Path, pki: Pki,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    leaf, _ = pki.server("leaf", ips=("127.0.0.1",))
    for ca_file, words in ((tmp_path / "nowhere.pem", "No such file"), (leaf, "holds no CA certificate")):
        config = tmp_path / "agent.toml"
        config.write_text(f'device_id = "pi-tls-test"\nstate_dir = "{tmp_path / "state"}"\n[broker]\n'
                          f'url = "mqtts://127.0.0.1:1"\nca_file = "{ca_file}"\n')
        assert edge_agent_main(["--config", str(config)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("edge-agent: broker.ca_file: ") and words in err and len(err.splitlines()) == 1


def test_a_ca_file_with_a_plaintext_url_is_refused(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"^broker: ca_file is set but the url is mqtt://"):
        parse_config({"device_id": "pi-tls-test", "state_dir": str(tmp_path),
                      "broker": {"url": "mqtt://127.0.0.1:1883", "ca_file": str(pki.ca)}})
