"""The firmware's HTTPS enrollment checks the fleet (issue 8, finding 4), with the real MicroPython
interpreter and the real fleet: behind a TLS front whose certificate comes from the board's CA the
board enrolls and comes online over MQTT/TLS; a front with a certificate from another CA, or a
self-signed `CN=evil.example` one, never gets the enrollment token (it decrypts nothing, and the
token still works afterwards); an http:// fleet URL is refused without a connection."""

import re
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from provisioning.hostboard import EXIT_CONFIG, console_text, prepare_board, start_board, stop_board
from tests.firmware.tls_peers import TlsServer, der, front_for, make_ca, server_cert
from tests.support.fleet import fleet_in_thread, fleet_settings
from tests.support.mosquitto import Mosquitto
from tests.support.tls import TlsFiles
from tests.support.wait import async_wait_for, wait_for

NOT_TRUSTED = r"enroll: fleet not trusted \(([^)]*)\); the token was not sent; retry in \d+ s"


@dataclass
class Site:
    http: httpx.AsyncClient  # the fleet's API, as an admin
    fleet_port: int  # the fleet's plaintext HTTP port (what the TLS front relays to)
    broker: Mosquitto
    ca: TlsFiles  # the CA the boards are given
    other_ca: TlsFiles

    async def token(self) -> str:
        issued = await self.http.post("/api/enrollment-tokens", json={"kind": "esp32", "site": "Tân Bình"})
        assert issued.status_code == 201, issued.text
        return str(issued.json()["token"])

    async def token_unused(self) -> bool:
        """Every enrollment token issued so far is still unused."""
        rows = (await self.http.get("/api/enrollment-tokens")).json()
        return bool(rows) and all(row["used_at"] is None for row in rows)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    ca = make_ca(tmp_path / "ca")
    broker = Mosquitto(tmp_path / "mosquitto", secure=True, tls=server_cert(tmp_path / "broker", ca, ["127.0.0.1"]))
    broker.start()
    try:
        settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", broker.admin_url,
                                  broker_accounts="dynsec",
                                  device_broker_url=f"mqtts://127.0.0.1:{broker.tls_port}")
        async with fleet_in_thread(settings) as http:
            yield Site(http, settings.http_port, broker, ca, make_ca(tmp_path / "other-ca", "Some other CA"))
    finally:
        broker.kill()


def board_for(site: Site, folder: Path, device_id: str, token: str, fleet_url: str) -> Path:
    assert site.broker.tls_port
    return prepare_board(folder, device_id, "127.0.0.1", site.broker.tls_port, ca_der=der(site.ca.ca),
                         health_period_s=1, enrollment_token=token, fleet_url=fleet_url)


async def online(http: httpx.AsyncClient, device_id: str) -> dict[str, Any] | None:
    response = await http.get(f"/api/devices/{device_id}")
    body = response.json() if response.status_code == 200 else {}
    return body if body.get("online") and body.get("last_health") else None


async def test_board_enrolls_through_https_it_can_check(site: Site, tmp_path: Path) -> None:
    token = await site.token()
    front = TlsServer(server_cert(tmp_path / "front", site.ca, ["127.0.0.1"]), serve=front_for(site.fleet_port))
    with front:
        board_dir = board_for(site, tmp_path / "esp", "esp-https-01", token, f"https://127.0.0.1:{front.port}")
        board = start_board(board_dir)
        try:
            await async_wait_for(lambda: online(site.http, "esp-https-01"), timeout=45,
                                 what="the board enrolled over HTTPS, online over MQTT/TLS")
        finally:
            stop_board(board)
    assert front.handshakes >= 1 and token.encode() in front.received  # it went through the front
    assert token.encode() not in front.wire  # encrypted on the wire
    assert "enroll: enrolled as esp-https-01" in console_text(board_dir)
    assert " as esp-https-01 " in site.broker.log.read_text()


@pytest.mark.parametrize("impostor", ["certificate from another CA", "self-signed CN=evil.example"])
async def test_board_never_sends_its_token_to_a_fleet_it_cannot_trust(impostor: str, site: Site,
                                                                      tmp_path: Path) -> None:
    token = await site.token()
    if impostor == "certificate from another CA":
        cert = server_cert(tmp_path / "evil", site.other_ca, ["127.0.0.1"])
    else:
        cert = server_cert(tmp_path / "evil", None, ["evil.example", "127.0.0.1"])
    # the impostor relays to the real fleet: had the board sent the token, it would have been spent
    with TlsServer(cert, serve=front_for(site.fleet_port)) as evil:
        board_dir = board_for(site, tmp_path / "esp", "esp-https-02", token, f"https://127.0.0.1:{evil.port}")
        board = start_board(board_dir)
        try:
            refused = wait_for(lambda: re.findall(NOT_TRUSTED, console_text(board_dir))[1:], timeout=30,
                               what="two refused handshakes")
            assert all("not correctly signed by the trusted CA" in why for why in refused), refused
            assert board.poll() is None  # still trying, with backoff; nothing else to do without credentials
        finally:
            stop_board(board)
    assert evil.connections >= 2 and evil.handshakes == 0, evil.failures
    assert evil.received == b"" and token.encode() not in evil.wire
    assert await site.token_unused()

    # the same token, the fleet behind a front the board can check: it enrolls (the token was never spent)
    with TlsServer(server_cert(tmp_path / "front", site.ca, ["127.0.0.1"]),
                   serve=front_for(site.fleet_port)) as front:
        board_dir = board_for(site, tmp_path / "esp2", "esp-https-03", token, f"https://127.0.0.1:{front.port}")
        board = start_board(board_dir)
        try:
            await async_wait_for(lambda: online(site.http, "esp-https-03"), timeout=45, what="enrolled and online")
        finally:
            stop_board(board)


async def test_an_http_fleet_url_is_refused_without_a_connection(site: Site, tmp_path: Path) -> None:
    token = await site.token()
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[bytes] = []

    def record() -> None:
        listener.settimeout(30)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            accepted.append(conn.recv(4096))

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    board_dir = board_for(site, tmp_path / "esp", "esp-http-01", token,
                          f"http://127.0.0.1:{listener.getsockname()[1]}")
    board = start_board(board_dir)
    try:
        assert wait_for(lambda: board.poll() is not None, timeout=30, what="the board gives up") is True
    finally:
        stop_board(board)
        listener.close()
        thread.join(5)
    assert board.returncode == EXIT_CONFIG
    assert "enroll: refused: fleet_url is http://" in console_text(board_dir)
    assert accepted == [] and await site.token_unused()
