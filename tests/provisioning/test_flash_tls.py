"""`provision flash` and TLS (issue 8, finding 3): against a fleet whose broker speaks TLS (Mosquitto
with dynamic security and a TLS listener, the fleet answering `tls: true`), the tool writes the CA
from --ca-file next to config.json and the board comes online through the TLS listener. Every way
to end up with a board that would send its password readable, or could never connect, is refused
with one line before the board is written (and credentials already issued are revoked)."""

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.models import DeviceCredential
from provisioning.image import CA_FILE, MANIFEST
from provisioning.virtual_board import VirtualBoard
from tests.firmware.tls_peers import make_ca, server_cert
from tests.provisioning.conftest import ANSWER_TIMEOUT, FleetUnderTest, Run, arun_provision, run_provision
from tests.support.mosquitto import Mosquitto
from tests.support.tls import TlsFiles

SITE = "Chợ Đồng Xoài"
# TLS costs the firmware about 3.6 KB of heap on the 64-bit unix port (docs/firmware.md, Memory)
TLS_HEAP = "72k"


@dataclass
class TlsFleet:
    url: str
    technician_token: str
    broker: Mosquitto
    ca: TlsFiles
    broker_cert: TlsFiles


@pytest.fixture
async def tls_fleet(tmp_path: Path) -> AsyncIterator[TlsFleet]:
    from fleet.auth.roles import Role
    from tests.support.fleet import fleet_settings, running_fleet, token_for

    ca = make_ca(tmp_path / "ca")
    cert = server_cert(tmp_path / "broker-cert", ca, ["127.0.0.1"])
    broker = Mosquitto(tmp_path / "mosquitto", secure=True, tls=cert)
    broker.start()
    try:
        settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", broker.admin_url,
                                  broker_accounts="dynsec",
                                  device_broker_url=f"mqtts://127.0.0.1:{broker.tls_port}")
        async with running_fleet(settings) as http:
            token = await token_for(http, Role.TECHNICIAN)
            yield TlsFleet(str(http.base_url).rstrip("/"), token, broker, ca, cert)
    finally:
        broker.kill()


def flash(fleet_url: str, port: str, *extra: str) -> list[str]:
    return ["flash", "--port", port, "--kind", "sim", "--site", SITE, "--fleet", fleet_url, "--wait", "30",
            "--answer-timeout", ANSWER_TIMEOUT, *extra]


def one_line(result: Run, code: int = 1) -> str:
    assert result.code == code, (result.code, result.out, result.err)
    errors = [line for line in result.err.splitlines() if line.startswith("provision: ")]
    assert len(errors) == 1 and "Traceback" not in result.err, result.err
    return errors[0]


def untouched(board: VirtualBoard) -> bool:
    # (the marker may stay: it names the id registered for this board, which the next flash continues)
    return not any((board.board_dir / name).exists()
                   for name in ("main.py", "config.json", CA_FILE, "provision.new", "provision.old"))


async def test_flash_over_tls_comes_online(tls_fleet: TlsFleet, tmp_path: Path) -> None:
    with VirtualBoard(tmp_path / "board", link=tmp_path / "ttyESP0", heapsize=TLS_HEAP) as board:
        result = await arun_provision(*flash(tls_fleet.url, board.port, "--token", tls_fleet.technician_token,
                                             "--ca-file", str(tls_fleet.ca.ca)))
        assert result.code == 0, result.err
        [line] = result.out.splitlines()
        assert " online: " in line
        device_id = line.split()[2]
        config = json.loads((board.board_dir / "config.json").read_text())
        assert config["broker_port"] == tls_fleet.broker.tls_port and "insecure_plaintext" not in config
        ca_der = (board.board_dir / CA_FILE).read_bytes()
        assert ca_der == ssl.PEM_cert_to_DER_cert(tls_fleet.ca.ca.read_text())
        assert CA_FILE in json.loads((board.board_dir / MANIFEST).read_text())["files"]
    log = tls_fleet.broker.log.read_text()
    assert f"on port {tls_fleet.broker.tls_port}" in log and f" as {device_id} " in log


async def test_plaintext_is_refused_when_the_fleet_speaks_tls(tls_fleet: TlsFleet, vboard: VirtualBoard) -> None:
    result = await arun_provision(*flash(tls_fleet.url, vboard.port, "--token", tls_fleet.technician_token,
                                         "--insecure-plaintext"))
    line = one_line(result)
    assert "a TLS listener; drop --insecure-plaintext" in line and "were revoked" in line
    assert untouched(vboard)
    assert await DeviceCredential.filter(revoked_at=None).count() == 0


async def test_a_ca_or_the_explicit_choice_is_needed(tls_fleet: TlsFleet, vboard: VirtualBoard) -> None:
    result = await arun_provision(*flash(tls_fleet.url, vboard.port, "--token", tls_fleet.technician_token))
    line = one_line(result)
    assert "give --ca-file FILE" in line and "--insecure-plaintext only on a lab network" in line
    assert untouched(vboard)
    assert await DeviceCredential.all().count() == 0  # refused before the fleet was asked


async def test_a_tls_board_is_not_written_for_a_plaintext_broker(fleet: FleetUnderTest, vboard: VirtualBoard,
                                                                 tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    result = await arun_provision(*flash(fleet.url, vboard.port, "--token", fleet.technician_token,
                                         "--ca-file", str(ca.ca)))
    line = one_line(result)
    assert "without TLS: the password would cross the network in clear" in line and "were revoked" in line
    assert untouched(vboard)


def test_a_server_certificate_is_not_a_ca_file(vboard: VirtualBoard, tmp_path: Path) -> None:
    cert = server_cert(tmp_path / "cert", make_ca(tmp_path / "ca"), ["127.0.0.1"])
    result = run_provision(*flash("https://fleet.example", vboard.port, "--offline", "--enrollment-token",
                                  "ioc_test-token", "--broker", "mqtts://127.0.0.1", "--ca-file", str(cert.cert)))
    assert "holds no CA certificate (a server's own certificate will not do" in one_line(result)
    assert untouched(vboard)


def test_offline_tls_flash_writes_the_ca(vboard: VirtualBoard, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    bundle = tmp_path / "two-cas.pem"
    bundle.write_bytes(make_ca(tmp_path / "ca2", "A second CA").ca.read_bytes() + ca.ca.read_bytes())
    result = run_provision(*flash("https://fleet.example:8443", vboard.port, "--offline", "--enrollment-token",
                                  "ioc_test-token", "--broker", "mqtts://broker.example", "--ca-file", str(bundle)))
    assert result.code == 0, result.err
    config = json.loads((vboard.board_dir / "config.json").read_text())
    assert (config["broker_host"], config["broker_port"]) == ("broker.example", 8883)
    assert config["fleet_url"] == "https://fleet.example:8443" and "insecure_plaintext" not in config
    ders = [ssl.PEM_cert_to_DER_cert(pem.read_text()) for pem in (tmp_path / "ca2" / "ca.pem", ca.ca)]
    assert (vboard.board_dir / CA_FILE).read_bytes() == b"".join(ders)  # both, in order, as DER


@pytest.mark.parametrize(("args", "says"), [
    (("--broker", "mqtts://127.0.0.1", "--fleet", "http://fleet.example"), "readable on the network"),
    (("--broker", "mqtt://127.0.0.1", "--fleet", "https://fleet.example"), "--broker mqtt:// is plaintext"),
])
def test_offline_plaintext_paths_are_refused(args: tuple[str, ...], says: str, vboard: VirtualBoard,
                                             tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    result = run_provision("flash", "--port", vboard.port, "--kind", "sim", "--site", SITE, "--offline",
                           "--enrollment-token", "ioc_test-token", "--ca-file", str(ca.ca), *args)
    assert says in one_line(result)
    assert untouched(vboard)
