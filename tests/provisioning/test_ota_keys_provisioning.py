"""Provisioning gives devices the release keys they trust (docs/ota.md, "Signatures and keys"):
`provision flash --ota-keys` writes ota_keys.json at an ESP32's root (kept by a later flash that
gives none: a committed release may have rotated it), `provision pi-bundle --ota-keys` ships it for
install.sh, and the host boards of the tests get one from prepare_board."""

import json
from pathlib import Path

import pytest

from contract.release import TrustList
from provisioning.broker_tls import TransportChoice
from provisioning.hostboard import prepare_board
from provisioning.image import MANIFEST, sha256
from provisioning.pibundle import OTA_KEYS_NAME, PiBundleRequest, write_files
from provisioning.release import keygen, trust_list
from provisioning.virtual_board import VirtualBoard
from tests.provisioning.conftest import ANSWER_TIMEOUT, run_provision

OFFLINE = ("--kind", "sim", "--site", "Chợ Đồng Xoài", "--offline", "--enrollment-token", "ioc_test-token",
           "--broker", "127.0.0.1:1883", "--fleet", "http://fleet.example:8000", "--insecure-plaintext",
           "--answer-timeout", ANSWER_TIMEOUT)


@pytest.fixture(scope="module")
def pubs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ota-keys")
    return keygen(folder / "one.pem")[0], keygen(folder / "two.pem")[0]


def test_flash_writes_the_trust_list_and_a_later_flash_without_one_keeps_it(vboard: VirtualBoard,
                                                                           pubs: tuple[Path, Path]) -> None:
    one, two = pubs
    board = vboard.board_dir / "ota_keys.json"
    first = run_provision("flash", "--port", vboard.port, *OFFLINE, "--ota-keys", str(one))
    assert first.code == 0, first.err
    written = board.read_text()
    assert TrustList.from_json(written) == trust_list([one])
    assert json.loads((vboard.board_dir / MANIFEST).read_text())["files"]["ota_keys.json"] == sha256(written.encode())
    again = run_provision("flash", "--port", vboard.port, *OFFLINE)
    assert again.code == 0, again.err
    assert board.read_text() == written  # kept
    other = run_provision("flash", "--port", vboard.port, *OFFLINE, "--ota-keys", str(two))
    assert other.code == 0, other.err
    assert TrustList.from_json(board.read_text()) == trust_list([two])
    assert not (vboard.board_dir / "provision.old").exists() and not (vboard.board_dir / "provision.new").exists()


def test_flash_refuses_an_unusable_key_file_before_touching_the_board(vboard: VirtualBoard, tmp_path: Path) -> None:
    bad = tmp_path / "keys.pem"
    bad.write_text("not a key")
    result = run_provision("flash", "--port", vboard.port, *OFFLINE, "--ota-keys", str(bad))
    assert result.code == 1
    assert result.err.strip().startswith(f"provision: {bad}: not a public key file or trust list")
    assert not (vboard.board_dir / "main.py").exists()


def test_a_pi_bundle_ships_the_trust_list_for_install_sh(tmp_path: Path, pubs: tuple[Path, Path]) -> None:
    one, two = pubs
    text = trust_list([one, two]).to_json()
    request = PiBundleRequest(out_dir=tmp_path / "bundle", site="x", transport=TransportChoice.from_options(
        broker="127.0.0.1:1883", ca_file=None, system_ca=False, plaintext=True), enrollment_token="t",
        offline=True, fleet_url="http://fleet.example", ota_keys=text)
    folder = tmp_path / "bundle"
    folder.mkdir()
    write_files(folder, request, "pi-x-0001", None, "0.1.0")
    shipped = folder / OTA_KEYS_NAME
    assert shipped.read_text() == text and shipped.stat().st_mode & 0o777 == 0o644
    assert len(TrustList.from_json(shipped.read_text()).keys) == 2


def test_pi_bundle_refuses_an_unusable_key_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "keys.json"
    bad.write_text('{"keys": []}')
    result = run_provision("pi-bundle", "--out", str(tmp_path / "out"), "--site", "x", "--offline",
                           "--insecure-plaintext", "--enrollment-token", "t", "--broker", "127.0.0.1:1883",
                           "--fleet", "http://fleet.example", "--ota-keys", str(bad))
    assert result.code == 1
    assert result.err.strip() == (f"provision: {bad}: not a public key file or trust list: "
                                  "a trust list holds 1 to 4 keys")
    assert not (tmp_path / "out").exists()


def test_a_host_board_gets_its_trust_list(tmp_path: Path, pubs: tuple[Path, Path]) -> None:
    text = trust_list([pubs[0]]).to_json().encode()
    board = prepare_board(tmp_path / "esp", "esp-1", "127.0.0.1", 1883, precompiled=False, ota_keys=text)
    assert (board / "ota_keys.json").read_bytes() == text
