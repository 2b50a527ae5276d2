"""`provision pi-bundle` and TLS: a Pi always gets mqtts and the CA to check the broker with, unless
the technician explicitly asks for plaintext (issue 8, finding 3).

The attack this stops: a fleet whose devices' broker speaks TLS (`tls: true` in the credentials
answer), and a bundle that still wrote `mqtt://`, so the agent sent its password in clear.
"""

import asyncio
import os
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.config import load_config
from tests.provisioning.conftest import FleetUnderTest, arun_provision, run_provision
from tests.provisioning.pi_bundle_support import install
from tests.support.fleet import fleet_in_thread, fleet_settings
from tests.support.mosquitto import Mosquitto
from tests.support.tls import TlsFiles, make_tls
from tests.support.wait import async_wait_for

SITE = "Ngã tư Phú Riềng Đỏ"


@dataclass
class TlsFleet:
    url: str
    http: httpx.AsyncClient  # logged in as an admin
    token: str
    broker: Mosquitto
    tls: TlsFiles

    @property
    def tls_port(self) -> int:
        assert self.broker.tls_port is not None
        return self.broker.tls_port

    async def device_ids(self) -> set[str]:
        response = await self.http.get("/api/devices", params={"limit": 500})
        assert response.status_code == 200, response.text
        body = response.json()
        items = body["items"] if isinstance(body, dict) else body
        return {item["id"] for item in items}


@pytest.fixture
async def tls_fleet(tmp_path: Path) -> AsyncIterator[TlsFleet]:
    """The production set-up: Mosquitto with dynamic security and a TLS listener (a CA made for this
    test); the fleet tells devices to use the TLS listener, so its credentials answer says tls."""
    tls = make_tls(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "mosquitto", secure=True, tls=tls)
    broker.start()
    assert broker.tls_port is not None
    settings = fleet_settings(f"sqlite://{tmp_path / 'fleet.sqlite3'}", broker.admin_url, broker_accounts="dynsec",
                              device_broker_url=f"mqtts://127.0.0.1:{broker.tls_port}")
    try:
        async with fleet_in_thread(settings) as http:
            token = str(http.headers["Authorization"]).removeprefix("Bearer ")
            yield TlsFleet(str(http.base_url).rstrip("/"), http, token, broker, tls)
    finally:
        broker.kill()


def ca_der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


async def _online(http: httpx.AsyncClient, device_id: str) -> dict[str, Any] | None:
    response = await http.get(f"/api/devices/{device_id}")
    body: dict[str, Any] = response.json() if response.status_code == 200 else {}
    return body if body.get("online") and body.get("last_birth_at") else None


async def test_bundle_for_a_tls_fleet_installs_and_comes_online_over_tls(tls_fleet: TlsFleet, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = await arun_provision("pi-bundle", "--out", str(out), "--site", SITE, "--role", "sim",
                                  "--ca-file", str(tls_fleet.tls.ca), "--fleet", tls_fleet.url,
                                  "--token", tls_fleet.token)
    assert result.code == 0, result.err
    device_id = result.out.split()[1]

    config = load_config(out / "agent.toml")
    assert config.broker.url == f"mqtts://127.0.0.1:{tls_fleet.tls_port}" and config.broker.tls
    assert config.broker.ca_file == out / "ca.pem"
    assert ca_der((out / "ca.pem").read_text()) == ca_der(tls_fleet.tls.ca.read_text())

    # The real install.sh, with the real pip, from the shipped wheels; then the installed agent.
    root = tmp_path / "root"
    installed = await asyncio.to_thread(install, out, root)
    assert installed.returncode == 0, installed.stderr
    etc = root / "etc/ioc-edge"
    assert ca_der((etc / "ca.pem").read_text()) == ca_der(tls_fleet.tls.ca.read_text())
    password = (etc / "credentials.env").read_text().removeprefix("EDGE_BROKER__PASSWORD=").strip()
    env = {"PATH": os.environ["PATH"], "EDGE_BROKER__PASSWORD": password,  # as systemd's EnvironmentFile=
           "EDGE_STATE_DIR": str(tmp_path / "state"), "EDGE_HEALTH_PERIOD_S": "1"}
    log = tmp_path / "agent.log"
    with log.open("wb") as sink:
        # as the unit's ExecStart: the installed launcher, which execs current/bin/edge-agent
        agent = subprocess.Popen([str(root / "opt/ioc-edge/launch"), "--config",  # noqa: ASYNC220
                                  str(etc / "agent.toml")], env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        await async_wait_for(lambda: _online(tls_fleet.http, device_id), timeout=60,
                             what="the installed agent online over TLS")
    finally:
        agent.send_signal(signal.SIGTERM)
        await asyncio.to_thread(agent.wait, 30)
    text = log.read_text()
    assert f"connected to mqtts://127.0.0.1:{tls_fleet.tls_port}" in text, text
    assert (root / "opt/ioc-edge/current/bin/edge-agent").exists() and "launch:" not in text  # nothing to report
    assert password not in text


async def test_a_tls_fleet_without_a_ca_is_refused_before_registering(tls_fleet: TlsFleet, tmp_path: Path) -> None:
    before = await tls_fleet.device_ids()
    out = tmp_path / "bundle"
    result = await arun_provision("pi-bundle", "--out", str(out), "--site", SITE, "--fleet", tls_fleet.url,
                                  "--token", tls_fleet.token)
    assert result.code == 1 and result.err.startswith("provision: ") and "--ca-file" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not out.exists() and await tls_fleet.device_ids() == before


async def test_plaintext_against_a_tls_fleet_needs_the_flag_and_a_plaintext_address(
        tls_fleet: TlsFleet, tmp_path: Path) -> None:
    plain = f"mqtt://127.0.0.1:{tls_fleet.broker.port}"
    before = await tls_fleet.device_ids()
    # mqtt:// without the flag: refused before anything is registered
    refused = await arun_provision("pi-bundle", "--out", str(tmp_path / "a"), "--site", SITE, "--broker", plain,
                                   "--ca-file", str(tls_fleet.tls.ca), "--fleet", tls_fleet.url,
                                   "--token", tls_fleet.token)
    assert refused.code == 1 and "--insecure-plaintext" in refused.err and "in clear" in refused.err
    assert await tls_fleet.device_ids() == before and not (tmp_path / "a").exists()

    # the flag, but the fleet's address is its TLS listener: refused, the credentials just issued revoked
    refused = await arun_provision("pi-bundle", "--out", str(tmp_path / "b"), "--site", SITE,
                                   "--insecure-plaintext", "--fleet", tls_fleet.url, "--token", tls_fleet.token)
    assert refused.code == 1 and "a TLS listener" in refused.err and "were revoked" in refused.err
    assert not (tmp_path / "b").exists()

    # the flag and a plaintext address: a plaintext bundle, with no CA
    made = await arun_provision("pi-bundle", "--out", str(tmp_path / "c"), "--site", SITE, "--broker", plain,
                                "--insecure-plaintext", "--fleet", tls_fleet.url, "--token", tls_fleet.token)
    assert made.code == 0, made.err
    config = load_config(tmp_path / "c" / "agent.toml")
    assert config.broker.url == plain and config.broker.ca_file is None and not (tmp_path / "c" / "ca.pem").exists()


async def test_a_plaintext_fleet_needs_the_flag(fleet: FleetUnderTest, tmp_path: Path) -> None:
    """The fleet itself hands out mqtt:// (a lab set-up): still no plaintext bundle without the flag."""
    tls = make_tls(tmp_path / "tls")
    out = tmp_path / "bundle"
    result = await arun_provision("pi-bundle", "--out", str(out), "--site", SITE, "--ca-file", str(tls.ca),
                                  "--fleet", fleet.url, "--token", fleet.technician_token)
    assert result.code == 1 and "without TLS" in result.err and "--insecure-plaintext" in result.err
    assert "were revoked" in result.err and not out.exists()


def test_broker_urls_and_contradictions(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    offline = ["--site", SITE, "--offline", "--enrollment-token", "ioc_t", "--fleet", "https://fleet.example"]

    for given, url in (("mqtts://broker.example:8884", "mqtts://broker.example:8884"),
                       ("mqtts://broker.example", "mqtts://broker.example:8883"),
                       ("broker.example:8884", "mqtts://broker.example:8884")):  # bare: TLS
        out = tmp_path / f"ok-{len(list(tmp_path.iterdir()))}"
        result = run_provision("pi-bundle", "--out", str(out), *offline, "--broker", given, "--ca-file", str(tls.ca))
        assert result.code == 0, result.err
        assert load_config(out / "agent.toml").broker.url == url

    out = tmp_path / "system-ca"
    result = run_provision("pi-bundle", "--out", str(out), *offline, "--broker", "broker.example", "--system-ca")
    assert result.code == 0, result.err
    config = load_config(out / "agent.toml")
    assert config.broker.tls and config.broker.ca_file is None and not (out / "ca.pem").exists()

    refusals = {
        "contradicts": ["--broker", "mqtts://b.example", "--insecure-plaintext"],
        "nothing to verify": ["--broker", "mqtt://b.example", "--insecure-plaintext", "--ca-file", str(tls.ca)],
        "either --ca-file or --system-ca": ["--broker", "b.example", "--ca-file", str(tls.ca), "--system-ca"],
        "expected mqtts://": ["--broker", "http://b.example", "--ca-file", str(tls.ca)],
        "no user": ["--broker", "mqtts://u:p@b.example", "--ca-file", str(tls.ca)],
        "port": ["--broker", "mqtts://b.example:99999", "--ca-file", str(tls.ca)],
    }
    for words, options in refusals.items():
        out = tmp_path / "refused"
        result = run_provision("pi-bundle", "--out", str(out), *offline, *options)
        assert result.code == 1 and words in result.err, (options, result.err)
        assert len(result.err.strip().splitlines()) == 1 and not out.exists()

    # an offline Pi fetches its password from --fleet when installed: plain http only with the flag
    result = run_provision("pi-bundle", "--out", str(tmp_path / "http"), "--site", SITE, "--offline",
                           "--enrollment-token", "ioc_t", "--fleet", "http://fleet.example", "--broker", "b.example",
                           "--ca-file", str(tls.ca))
    assert result.code == 1 and "must be https://" in result.err


def test_a_ca_file_must_be_a_ca_certificate(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    both = tmp_path / "both.pem"
    both.write_text(tls.ca.read_text() + tls.key.read_text())
    offline = ["--site", SITE, "--offline", "--enrollment-token", "ioc_t", "--fleet", "https://f.example",
               "--broker", "b.example"]
    for ca_file, words in ((tls.cert, "holds no CA certificate"), (both, "private key"),
                           (junk, "not a PEM file"), (tmp_path / "missing.pem", "cannot read")):
        out = tmp_path / "refused"
        result = run_provision("pi-bundle", "--out", str(out), *offline, "--ca-file", str(ca_file))
        assert result.code == 1 and words in result.err, result.err
        assert not out.exists()
