"""The offline batch day (issue 17, must-have 6) on real processes: a batch prepared against the real
fleet (tokens bound to new ids, firmware, labels), boards flashed from it through the real CLI on
virtual boards with no fleet reachable, and the boards enrolling themselves once it is. A flash cut
mid-copy spends its entry, so no token is given twice. Over TLS, a board refuses to enrol at a
fleet whose certificate is not from the batch's CA (the token is never sent and stays unused), and
enrols with the same token once the fleet it can check answers at that address."""

import json
import select
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pypdf
import pytest
import zxingcpp

from fleet.auth.roles import Role
from provisioning.batch import ENTRIES, USED
from provisioning.errors import BoardStoppedAnswering, NotAuthorised
from provisioning.image import CA_FILE
from provisioning.virtual_board import VirtualBoard
from tests.conftest import ARTIFACTS
from tests.firmware.tls_peers import TlsServer, front_for, make_ca, server_cert
from tests.provisioning.conftest import ANSWER_TIMEOUT, FIRMWARE_HEAP, FleetUnderTest, arun_provision
from tests.support.fleet import fleet_in_thread, fleet_settings, token_for
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.tls import TlsFiles
from tests.support.wait import async_wait_for, wait_for

WARD = "Tân Phú"
TLS_HEAP = "72k"  # TLS costs the firmware about 3.6 KB of heap on the unix port (docs/firmware.md)


class Switch:
    """A TCP port on 127.0.0.1 that refuses connections until pointed at a server, then relays to it:
    'the fleet is unreachable from the field', then 'reachable', at one address the boards hold."""

    def __init__(self) -> None:
        self.port = free_port()
        self.target: int | None = None
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def point_at(self, port: int) -> None:
        self.target = port
        if self._listener is None:
            self._listener = socket.create_server(("127.0.0.1", self.port))
            self._thread = threading.Thread(target=self._run, name="switch", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._listener is not None:
            self._listener.close()

    def _run(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            readable, _, _ = select.select([self._listener], [], [], 0.1)
            if readable:
                conn, _ = self._listener.accept()
                threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        assert self.target is not None
        try:
            with conn, socket.create_connection(("127.0.0.1", self.target), timeout=10) as back:
                ends = {conn: back, back: conn}
                while not self._stop.is_set():
                    readable, _, _ = select.select([conn, back], [], [], 10)
                    if not readable:
                        return
                    for sock in readable:
                        chunk = sock.recv(4096)
                        if not chunk:
                            return
                        ends[sock].sendall(chunk)
        except OSError:
            return


@contextmanager
def switch() -> Iterator[Switch]:
    relay = Switch()
    try:
        yield relay
    finally:
        relay.close()


async def tokens(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """The fleet's enrollment tokens by the device id they are bound to."""
    return {row["device_id"]: row for row in (await http.get("/api/enrollment-tokens")).json()}


async def online(http: httpx.AsyncClient, device_id: str) -> dict[str, Any] | None:
    response = await http.get(f"/api/devices/{device_id}")
    body: dict[str, Any] = response.json() if response.status_code == 200 else {}
    return body if body.get("online") else None


def entry(batch: Path, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((batch / ENTRIES / f"{name}.json").read_text())
    return result


def used(batch: Path) -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((batch / USED).glob("*.json"))}


def keep_for_the_note(path: Path) -> None:
    """A batch's label sheet, kept with the tests' artifacts (test-artifacts/)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)


def flash_batch(batch: Path, *ports: str, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["flash", "--batch", str(batch), "--answer-timeout", ANSWER_TIMEOUT, *extra]
    for port in ports:
        args += ["--port", port]
    return args


async def test_batch_day_offline(fleet: FleetUnderTest, tmp_path: Path) -> None:
    ops = await token_for(fleet.http, Role.OPS)
    batch = tmp_path / "batch"
    prepare = ["batch", "prepare", "--count", "3", "--kind", "sim", "--ward", WARD,
               "--broker", f"mqtt://127.0.0.1:{fleet.mosquitto.port}", "--insecure-plaintext", "--fleet", fleet.url,
               "--public-url", "https://ioc.example", "--out", str(batch)]
    # a technician may not make enrollment tokens: refused, no folder left behind
    refused = await arun_provision(*prepare, "--token", fleet.technician_token)
    assert refused.code == NotAuthorised.exit_code and "the fleet refused the API token" in refused.err
    assert not batch.exists() and await tokens(fleet.http) == {}
    with switch() as field_link:
        # the depot: tokens bound to new ids, made against the real fleet; the boards will enrol at
        # an address that does not answer yet (the field has no link to the fleet)
        made = await arun_provision(*prepare, "--token", ops, "--enroll-url", f"http://127.0.0.1:{field_link.port}")
        assert made.code == 0, made.err
        assert made.out.startswith(f"ok batch {batch}: 3 boards (")
        ids = [entry(batch, f"{n:03d}")["device_id"] for n in (1, 2, 3)]
        assert all(device_id.startswith("sim-tan-phu-") for device_id in ids) and len(set(ids)) == 3
        issued = await tokens(fleet.http)
        assert all(issued[device_id]["used_at"] is None and issued[device_id]["ward"] == WARD for device_id in ids)
        assert (batch / ENTRIES / "001.json").stat().st_mode & 0o077 == 0  # tokens: the owner's only
        sheet = pypdf.PdfReader(batch / "labels.pdf")
        assert len(sheet.pages) == 1
        [picture] = sheet.pages[0].images
        found = sorted(result.text for result in zxingcpp.read_barcodes(picture.image))
        assert found == sorted(f"https://ioc.example/devices/{device_id}" for device_id in ids)
        keep_for_the_note(batch / "labels.pdf")

        # the field: the first board's cable is pulled mid-copy; its entry is spent all the same
        with VirtualBoard(tmp_path / "b1", link=tmp_path / "ttyESP1", heapsize=FIRMWARE_HEAP) as first, \
                VirtualBoard(tmp_path / "b2", link=tmp_path / "ttyESP2", heapsize=FIRMWARE_HEAP) as second:
            first.fail_after(20_000)
            cut = await arun_provision(*flash_batch(batch, first.port))
            assert cut.code == BoardStoppedAnswering.exit_code, cut.err
            assert f"batch entry 001 ({ids[0]}) is spent" in cut.err and "Traceback" not in cut.err
            assert used(batch)["001"]["result"].startswith("failed: ")

            first.power_cycle()
            result = await arun_provision(*flash_batch(batch, first.port, second.port,
                                                       extra=("--label-dir", str(tmp_path / "labels"))))
            assert result.code == 0, result.err
            print(f"\n$ provision flash --batch ... (2 boards)\n{result.out}")
            lines = result.out.splitlines()
            assert [line.split()[2] for line in lines if line.startswith("ok ")] == ids[1:]
            assert f"label 002 of the sheet: {ids[1]}  ward {WARD}" in result.out
            assert f"label 003 of the sheet: {ids[2]}" in result.out
            assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == sorted(f"{i}.png" for i in ids[1:])
            for board, (name, device_id) in ((first, ("002", ids[1])), (second, ("003", ids[2]))):
                config = json.loads((board.board_dir / "config.json").read_text())
                assert config["device_id"] == device_id and config["enrollment_token"] == entry(batch, name)["token"]
                assert "password" not in config
            assert set(used(batch)) == {"001", "002", "003"}
            assert used(batch)["002"]["result"].startswith(f"ok {first.port} {ids[1]} written (offline")

            # nothing is left: a fourth board is refused before its port is opened
            again = await arun_provision(*flash_batch(batch, str(tmp_path / "ttyNONE")))
            assert again.code == 1 and "has 0 unused entries for 1 boards: prepare another batch" in again.err

            # the link comes up: both boards enrol themselves and come online
            field_link.point_at(int(fleet.url.rsplit(":", 1)[1]))
            for device_id in ids[1:]:
                await async_wait_for(lambda d=device_id: online(fleet.http, d), timeout=90,
                                     what=f"{device_id} enrolled and online")
    issued = await tokens(fleet.http)
    assert issued[ids[0]]["used_at"] is None  # the cut board's token was never given to another
    assert issued[ids[1]]["used_by_device"] == ids[1] and issued[ids[2]]["used_by_device"] == ids[2]


@pytest.fixture
async def tls_site(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, int, Mosquitto, TlsFiles]]:
    ca = make_ca(tmp_path / "ca")
    broker = Mosquitto(tmp_path / "mosquitto", secure=True, tls=server_cert(tmp_path / "broker", ca, ["127.0.0.1"]))
    broker.start()
    try:
        settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", broker.admin_url,
                                  broker_accounts="dynsec", device_broker_url=f"mqtts://127.0.0.1:{broker.tls_port}")
        async with fleet_in_thread(settings) as http:
            yield http, settings.http_port, broker, ca
    finally:
        broker.kill()


async def test_a_batch_board_enrols_only_at_a_fleet_its_ca_vouches_for(
        tls_site: tuple[httpx.AsyncClient, int, Mosquitto, TlsFiles], tmp_path: Path) -> None:
    http, fleet_port, broker, ca = tls_site
    ops = http.headers["Authorization"].removeprefix("Bearer ")  # the admin's (the fleet runs in a thread)
    batch = tmp_path / "batch"
    evil = TlsServer(server_cert(tmp_path / "evil", make_ca(tmp_path / "other-ca", "Some other CA"), ["127.0.0.1"]),
                     serve=front_for(fleet_port))
    good = TlsServer(server_cert(tmp_path / "front", ca, ["127.0.0.1"]),
                     serve=front_for(fleet_port))
    with switch() as fleet_address, evil, good:
        made = await arun_provision("batch", "prepare", "--count", "1", "--kind", "sim", "--ward", WARD,
                                    "--broker", f"mqtts://127.0.0.1:{broker.tls_port}", "--ca-file", str(ca.ca),
                                    "--fleet", str(http.base_url), "--token", ops,
                                    "--enroll-url", f"https://127.0.0.1:{fleet_address.port}", "--out", str(batch))
        assert made.code == 0, made.err
        device_id = entry(batch, "001")["device_id"]
        with VirtualBoard(tmp_path / "b", link=tmp_path / "ttyESP0", heapsize=TLS_HEAP) as board:
            result = await arun_provision(*flash_batch(batch, board.port))
            assert result.code == 0, result.err
            assert (board.board_dir / CA_FILE).is_file()  # the batch's CA, which the board checks with

            # an impostor answers at the fleet's address, relaying to the real fleet: had the board
            # sent its token, the token would be spent
            fleet_address.point_at(evil.port)
            wait_for(lambda: evil.connections >= 2, timeout=60, what="two attempts at the impostor")
            assert evil.handshakes == 0 and evil.received == b"" and entry(batch, "001")["token"].encode() \
                not in evil.wire
            assert (await tokens(http))[device_id]["used_at"] is None

            # the real fleet behind a certificate from the batch's CA: the same token enrols the board
            fleet_address.point_at(good.port)
            await async_wait_for(lambda: online(http, device_id), timeout=120, what="enrolled over HTTPS, online")
    assert (await tokens(http))[device_id]["used_by_device"] == device_id
    assert f" as {device_id} " in broker.log.read_text()

