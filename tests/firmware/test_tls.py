"""MQTT over TLS in the firmware (issue 8, finding 3), with the real MicroPython interpreter: the
board reaches a real Mosquitto through its TLS listener only, and a broker it cannot trust (a
certificate from another CA, a self-signed one, one for another name) never gets a byte of
MQTT from it, so never its password. A TLS server that records what it decrypts plays the
impostor; the same server, trusted, shows what the impostor would have read."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning.hostboard import EXIT_CONFIG
from tests.firmware.support import HostBoard, wait_upstream
from tests.firmware.tls_peers import TlsServer, der, make_ca, server_cert
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe
from tests.support.tls import TlsFiles
from tests.support.wait import wait_for

Boards = Callable[..., HostBoard]
PASSWORD = "board-password-9f3e1c"  # what an eavesdropper must never read
HANDSHAKE_FAILED = r"connect failed: MQTTError\('TLS handshake failed: ([^']*)'"


@dataclass
class Pki:
    ca: TlsFiles  # the CA the board is given
    broker: TlsFiles  # the broker's certificate for 127.0.0.1, signed by it
    other_ca: TlsFiles  # a CA the board knows nothing of


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = make_ca(tmp_path / "ca")
    return Pki(ca, server_cert(tmp_path / "broker", ca, ["127.0.0.1", "localhost"]),
               make_ca(tmp_path / "other-ca", "Some other CA"))


@pytest.fixture
def mosquitto(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    """The test's broker: a plain listener (the probe's) and a TLS one with the board CA's certificate."""
    broker = Mosquitto(tmp_path / "mosquitto", tls=pki.broker)
    broker.start()
    yield broker
    broker.kill()


def tls_board(boards: Boards, device_id: str, port: int, ca_der: bytes) -> HostBoard:
    return boards(device_id, port=port, ca_der=ca_der, username=device_id, password=PASSWORD)


def handshake_failures(board: HostBoard, count: int = 2) -> list[str]:
    return [m.group(1) for m in board.wait_console(HANDSHAKE_FAILED, count=count, timeout=30)]


@pytest.mark.parametrize("ca_file", ["one CA", "a bundle of two"])
def test_board_comes_online_over_tls(ca_file: str, boards: Boards, device_id: str, probe: Probe,
                                     mosquitto: Mosquitto, pki: Pki) -> None:
    ca_der = der(pki.ca.ca) if ca_file == "one CA" else der(pki.other_ca.ca) + der(pki.ca.ca)
    assert mosquitto.tls_port
    board = tls_board(boards, device_id, mosquitto.tls_port, ca_der).start()
    birth = wait_upstream(probe, "birth", timeout=30)[0]
    assert birth["kind"] == "esp32"
    wait_upstream(probe, "health", timeout=30)
    log = mosquitto.log.read_text()
    assert f"on port {mosquitto.tls_port}" in log and f" as {device_id} " in log
    assert "insecure_plaintext" not in board.console() and "TLS handshake failed" not in board.console()
    assert board.stop() == 0


@pytest.mark.parametrize("impostor", ["certificate from another CA", "self-signed CN=evil.example",
                                      "the board's CA, another name"])
def test_board_never_sends_its_password_to_a_broker_it_cannot_trust(
        impostor: str, boards: Boards, device_id: str, pki: Pki, tmp_path: Path) -> None:
    if impostor == "certificate from another CA":
        cert = server_cert(tmp_path / "impostor", pki.other_ca, ["127.0.0.1"])
        reason = "not correctly signed by the trusted CA"
    elif impostor == "self-signed CN=evil.example":
        cert = server_cert(tmp_path / "impostor", None, ["evil.example", "127.0.0.1"])
        reason = "not correctly signed by the trusted CA"
    else:
        cert = server_cert(tmp_path / "impostor", pki.ca, ["broker.example"])
        reason = "Common Name (CN) does not match"
    with TlsServer(cert) as server:
        board = tls_board(boards, device_id, server.port, der(pki.ca.ca)).start()
        reasons = handshake_failures(board)
        assert all(reason in r for r in reasons), reasons
        assert server.connections >= 2 and server.handshakes == 0, server.failures
        assert server.received == b"" and PASSWORD.encode() not in server.wire
        assert board.running  # it keeps trying, with backoff, like any failed connect
        board.stop()


def test_an_impostor_the_board_trusts_would_read_its_password(boards: Boards, device_id: str, pki: Pki,
                                                             tmp_path: Path) -> None:
    """The control for the test above: the recording server does see a CONNECT it can decrypt."""
    with TlsServer(server_cert(tmp_path / "trusted", pki.ca, ["127.0.0.1"])) as server:
        board = tls_board(boards, device_id, server.port, der(pki.ca.ca)).start()
        wait_for(lambda: PASSWORD.encode() in server.received, timeout=30, what="the CONNECT, decrypted")
        assert server.handshakes >= 1 and PASSWORD.encode() not in server.wire  # encrypted on the wire
        board.kill()


def test_a_plaintext_board_sends_its_password_readable(boards: Boards, device_id: str, pki: Pki,
                                                       tmp_path: Path) -> None:
    """What `insecure_plaintext` means (and what every board did before TLS): its CONNECT, password
    included, is readable by whatever listens on the broker's address."""
    with TlsServer(server_cert(tmp_path / "tls-port", pki.ca, ["127.0.0.1"])) as server:
        board = boards(device_id, port=server.port, username=device_id, password=PASSWORD,
                       insecure_plaintext=True).start()
        wait_for(lambda: PASSWORD.encode() in server.wire, timeout=30, what="the plaintext CONNECT")
        assert "insecure_plaintext: MQTT without TLS" in board.console()
        board.kill()


def test_a_real_broker_with_a_certificate_from_another_ca_sees_no_login(
        boards: Boards, device_id: str, probe: Probe, mosquitto: Mosquitto, pki: Pki) -> None:
    assert mosquitto.tls_port
    board = tls_board(boards, device_id, mosquitto.tls_port, der(pki.other_ca.ca)).start()
    assert all("not correctly signed" in r for r in handshake_failures(board))
    log = mosquitto.log.read_text()
    assert f"on port {mosquitto.tls_port}" in log  # it did reach the broker's TLS listener
    assert f" as {device_id} " not in log and device_id not in log  # no CONNECT ever arrived
    assert not [m for m in probe.messages if m[0].endswith("/birth")]
    board.stop()


def test_tls_to_a_plaintext_port_fails_clearly(boards: Boards, device_id: str, probe: Probe,
                                               mosquitto: Mosquitto, pki: Pki) -> None:
    board = tls_board(boards, device_id, mosquitto.port, der(pki.ca.ca)).start()
    reasons = handshake_failures(board)
    assert reasons and all(r for r in reasons), reasons
    assert f" as {device_id} " not in mosquitto.log.read_text()
    assert not [m for m in probe.messages if m[0].endswith("/birth")] and board.running
    board.stop()


@pytest.mark.parametrize(("ca_der", "says"), [
    (None, "fw: config error: ca.der: missing (the CA of the broker and the fleet"),
    (b"not a certificate", "fw: config error: ca.der: not DER certificates"),
])
def test_without_a_usable_ca_the_board_refuses_to_start(ca_der: bytes | None, says: str, boards: Boards,
                                                        device_id: str, mosquitto: Mosquitto) -> None:
    """Plaintext only when config.json says so: no CA and no `insecure_plaintext` is a config error."""
    board = boards(device_id, port=mosquitto.tls_port, insecure_plaintext=False, ca_der=ca_der)
    if ca_der is None:
        (board.path / "ca.der").unlink(missing_ok=True)
    board.start()
    assert board.wait_exit(30) == EXIT_CONFIG
    assert says in board.console()
