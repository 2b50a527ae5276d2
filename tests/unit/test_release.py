"""contract/release.py beyond the shared vectors: keys read from PEM without a crypto library, the
trust list file, versions, and each refusal code raised by its own call (the vectors cover the
combinations; tests/unit/test_release_vectors.py)."""

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from contract.release import (
    ReleaseRefused,
    TrustList,
    TrustListError,
    check_offer_for_device,
    encoded_block,
    key_id,
    parse_version,
    public_keys_from_pem,
    verify_release,
)


@pytest.fixture(scope="module")
def private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def _pem(key: rsa.RSAPrivateKey, fmt: serialization.PublicFormat) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, fmt).decode()


def _meta(**changes: Any) -> str:
    doc = {"type": "ioc-release", "kind": "esp32", "classes": ["esp32"], "version": "0.2.0",
           "min_version": "0.1.0", "floor": "0.1.0", "expires": 1798761600, "key": "0" * 16,
           "files": [{"path": "app.mpy", "sha256": "a" * 64, "size": 1}], **changes}
    return json.dumps(doc)


def _sig(key: rsa.RSAPrivateKey, text: str) -> dict[str, str]:
    n = key.public_key().public_numbers().n
    raw = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {"key": key_id(n), "sig": base64.b64encode(raw).decode()}


def test_a_public_key_reads_the_same_from_both_pem_forms_and_its_id_is_the_modulus_hash(
        private: rsa.RSAPrivateKey) -> None:
    n = private.public_key().public_numbers().n
    spki = public_keys_from_pem(_pem(private, serialization.PublicFormat.SubjectPublicKeyInfo))
    pkcs1 = public_keys_from_pem(_pem(private, serialization.PublicFormat.PKCS1))
    assert [key.n for key in spki] == [key.n for key in pkcs1] == [n]
    assert spki[0].id == hashlib.sha256(n.to_bytes(384, "big")).hexdigest()[:16]


def test_the_encoded_block_is_what_cryptography_signs(private: rsa.RSAPrivateKey) -> None:
    numbers = private.public_key().public_numbers()
    raw = private.sign(b"release", padding.PKCS1v15(), hashes.SHA256())
    opened = pow(int.from_bytes(raw, "big"), numbers.e, numbers.n).to_bytes(384, "big")
    assert opened == encoded_block(b"release")
    assert opened.startswith(b"\x00\x01\xff") and len(opened) == 384


def test_keys_that_are_not_rsa_3072_with_exponent_65537_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TrustListError, match="RSA-3072"):
        public_keys_from_pem(_pem(small, serialization.PublicFormat.SubjectPublicKeyInfo))
    other_e = rsa.generate_private_key(public_exponent=3, key_size=3072)
    with pytest.raises(TrustListError, match="65537"):
        public_keys_from_pem(_pem(other_e, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(TrustListError, match="no PEM public key"):
        public_keys_from_pem("hello")


def test_a_trust_list_loads_from_ota_keys_json_or_pem(private: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    pem = tmp_path / "release.pub.pem"
    pem.write_text(_pem(private, serialization.PublicFormat.SubjectPublicKeyInfo))
    from_pem = TrustList.load(pem)
    json_file = tmp_path / "ota_keys.json"
    json_file.write_text(from_pem.to_json())
    assert TrustList.load(json_file) == from_pem
    assert json.loads(json_file.read_text()) == {"keys": [{"id": from_pem.ids[0], "n": format(
        private.public_key().public_numbers().n, "x")}]}


@pytest.mark.parametrize(("text", "expected"), [("0.0.0", (0, 0, 0)), ("1.22.333", (1, 22, 333)),
                                                ("999999999.0.1", (999999999, 0, 1))])
def test_versions_parse_as_numbers(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(text) == expected
    assert parse_version("0.10.0") > parse_version("0.9.9")


@pytest.mark.parametrize("text", ["1.2", "1.2.3.4", "01.2.3", "1.2.3-rc1", " 1.2.3", "1.2.3\n", "v1.2.3", "", "١.٢.٣",
                                  "1000000000.0.0", 1])
def test_versions_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_version(text)


def test_each_refusal_code_from_verification(private: rsa.RSAPrivateKey) -> None:
    trust = TrustList.of(public_keys_from_pem(_pem(private, serialization.PublicFormat.SubjectPublicKeyInfo)))
    other = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    good = _meta()
    assert verify_release(good, [_sig(private, good)], trust).name == "esp32-0.2.0"
    cases = [
        ("unsigned", good, []),
        ("unknown_key", good, [_sig(other, good)]),
        ("bad_signature", good.replace("0.2.0", "0.3.0"), [_sig(private, good)]),
        ("bad_meta", _meta(extra=1), [_sig(private, _meta(extra=1))]),
    ]
    for reason, text, sigs in cases:
        with pytest.raises(ReleaseRefused) as refused:
            verify_release(text, sigs, trust)
        assert refused.value.reason == reason
        assert "0.3.0" not in refused.value.msg  # a refusal never repeats the offered text


def test_each_refusal_code_of_the_device_checks(private: rsa.RSAPrivateKey) -> None:
    trust = TrustList.of(public_keys_from_pem(_pem(private, serialization.PublicFormat.PKCS1)))
    text = _meta()
    meta = verify_release(text, [_sig(private, text)], trust)
    now = 1790000000
    check_offer_for_device(meta, "esp32", "esp32", "0.1.0", "0.1.0", now)  # may be installed
    cases = [
        ("wrong_kind", ("pi", "esp32", "0.1.0", None, now)),
        ("wrong_class", ("esp32", "esp32-s3", "0.1.0", None, now)),
        ("same_version", ("esp32", "esp32", "0.2.0", None, now)),
        ("downgrade", ("esp32", "esp32", "0.3.0", None, now)),
        ("downgrade", ("esp32", "esp32", "0.1.0", "0.2.1", now)),
        ("too_old", ("esp32", "esp32", "0.0.9", None, now)),
        ("no_clock", ("esp32", "esp32", "0.1.0", None, None)),
        ("no_clock", ("esp32", "esp32", "0.1.0", None, 946684800)),
        ("expired", ("esp32", "esp32", "0.1.0", None, 1798761600)),
    ]
    for reason, (kind, device_class, running, floor, at) in cases:
        with pytest.raises(ReleaseRefused) as refused:
            check_offer_for_device(meta, kind, device_class, running, floor, at)
        assert refused.value.reason == reason, (kind, device_class, running, floor, at)
