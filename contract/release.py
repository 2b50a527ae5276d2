"""Signed releases (docs/ota.md): the trust list, the metadata, and the checks a device makes.

Verification is pure Python (hashlib and one `pow()`), the same check the ESP32 makes in
MicroPython (firmware/app_a/ota_verify.py): RSA-3072 PKCS#1 v1.5 over SHA-256, the whole encoded
block `00 01 FF..FF 00 || DigestInfo(SHA-256) || H` compared byte for byte, never parsed. The
metadata is parsed only after a signature checked. Signing needs a private key and lives with the
signer (provisioning/release.py); nothing here imports `cryptography`.

A refusal is `ReleaseRefused(reason, msg)` with one of the refusal codes of docs/ota.md; the
message names what is wrong without repeating the offered value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from contract import strict_json
from contract.errors import ContractError

RELEASE_TYPE = "ioc-release"
KINDS = ("esp32", "pi")
META_MAX_BYTES = 8192  # docs/ota.md: the ESP32 slot's 31 files take 3.7 KB, rotation keys 0.8 KB a key
FILES_MAX = 64
CLASSES_MAX = 8
SIGS_MAX = 4
KEYS_MAX = 4
PATH_MAX = 64
VERSION_PART_MAX = 999_999_999  # nine digits: a version number never needs more
FILE_SIZE_MAX = 2**40
EXPIRES_MAX = 2**40  # Unix seconds, far beyond any real expiry; bounds what a device stores
KEY_BITS = 3072
KEY_BYTES = KEY_BITS // 8  # 384
PUBLIC_EXPONENT = 65537
KEY_ID_HEX = 16
ESP32_ENTRY = "app.mpy"  # the boot stage's entry point; the device writes it last
# a clock before this (2023-11-14) has not been set: an ESP32 starts at 2000-01-01
CLOCK_SET_AFTER_S = 1_700_000_000
# DER of DigestInfo{sha256, NULL} up to the digest (RFC 8017 §9.2 note 1)
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")

RefusalReason = Literal["bad_offer", "unsigned", "unknown_key", "bad_signature", "bad_meta", "wrong_kind",
                        "wrong_class", "downgrade", "too_old", "expired", "no_clock", "same_version"]

META_FIELDS = frozenset({"type", "kind", "classes", "version", "min_version", "floor", "expires", "key",
                         "files", "keys"})
META_OPTIONAL = frozenset({"keys"})
FILE_FIELDS = frozenset({"path", "sha256", "size"})

_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
_CLASS = re.compile(r"[a-z0-9_-]{1,32}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MODULUS_HEX = re.compile(r"[0-9a-f]{768}")  # 2 * KEY_BYTES
_PATH = re.compile(r"[A-Za-z0-9_./-]{1,64}")  # PATH_MAX

Version = tuple[int, int, int]


class ReleaseRefused(Exception):
    """A release (or an offer of it) a device must not install: `reason` is the refusal code."""

    def __init__(self, reason: RefusalReason, msg: str) -> None:
        super().__init__(f"{reason}: {msg}")
        self.reason: RefusalReason = reason
        self.msg = msg


class TrustListError(ValueError):
    """A trust list (or a public key) that is not what docs/ota.md says."""


# keys ---------------------------------------------------------------------------------------
def key_id(n: int) -> str:
    """The key id: the first 16 hex digits of SHA-256 of the modulus as 384 big-endian bytes."""
    return hashlib.sha256(n.to_bytes(KEY_BYTES, "big")).hexdigest()[:KEY_ID_HEX]


def _check_modulus(n: int) -> None:
    if n.bit_length() != KEY_BITS or n % 2 == 0:
        raise TrustListError(f"a public key must be an RSA-{KEY_BITS} modulus (odd, {KEY_BITS} bits)")


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An RSA-3072 public key with exponent 65537, as a device holds it."""

    n: int

    def __post_init__(self) -> None:
        _check_modulus(self.n)

    @property
    def id(self) -> str:
        return key_id(self.n)

    def to_entry(self) -> dict[str, str]:
        return {"id": self.id, "n": format(self.n, "x")}

    @classmethod
    def from_entry(cls, entry: Any) -> PublicKey:
        """A trust list entry `{"id": ..., "n": <modulus, lowercase hex>}`; its id must be the modulus's."""
        if not isinstance(entry, dict) or set(entry) != {"id", "n"}:
            raise TrustListError('a key entry is an object with exactly "id" and "n"')
        ident, modulus = entry["id"], entry["n"]
        if not isinstance(modulus, str) or not _MODULUS_HEX.fullmatch(modulus):
            raise TrustListError(f'a key\'s "n" is its modulus as {2 * KEY_BYTES} lowercase hex digits')
        key = cls(int(modulus, 16))
        if not isinstance(ident, str) or ident != key.id:
            raise TrustListError('a key\'s "id" is not the key id of its modulus')
        return key

    def verifies(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's RSASSA-PKCS1-v1_5 SHA-256 signature of `message`."""
        if len(signature) != KEY_BYTES:
            return False
        s = int.from_bytes(signature, "big")
        if s >= self.n:
            return False
        return pow(s, PUBLIC_EXPONENT, self.n).to_bytes(KEY_BYTES, "big") == encoded_block(message)


def encoded_block(message: bytes) -> bytes:
    """EMSA-PKCS1-v1_5 (RFC 8017 §9.2) of `message` for a 384-byte modulus: what a signature opens to."""
    tail = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    return b"\x00\x01" + b"\xff" * (KEY_BYTES - 3 - len(tail)) + b"\x00" + tail


@dataclass(frozen=True, slots=True)
class TrustList:
    """The public keys a verifier trusts (`ota_keys.json`: `{"keys": [{"id", "n"}, ...]}`, 1–4 keys)."""

    keys: tuple[PublicKey, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.keys) <= KEYS_MAX:
            raise TrustListError(f"a trust list holds 1 to {KEYS_MAX} keys")
        if len({key.id for key in self.keys}) != len(self.keys):
            raise TrustListError("a trust list names a key twice")

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key.id for key in self.keys)

    def get(self, ident: str) -> PublicKey | None:
        for key in self.keys:
            if key.id == ident:
                return key
        return None

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [key.to_entry() for key in self.keys]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_entries(cls, entries: Any) -> TrustList:
        if not isinstance(entries, list) or not 1 <= len(entries) <= KEYS_MAX:
            raise TrustListError(f"a trust list holds 1 to {KEYS_MAX} keys")
        return cls(tuple(PublicKey.from_entry(entry) for entry in entries))

    @classmethod
    def from_dict(cls, document: Any) -> TrustList:
        if not isinstance(document, dict) or set(document) != {"keys"}:
            raise TrustListError('a trust list is an object with exactly "keys"')
        return cls.from_entries(document["keys"])

    @classmethod
    def from_json(cls, text: str | bytes) -> TrustList:
        try:
            document = json.loads(text)
        except ValueError as err:
            raise TrustListError(f"a trust list is JSON: {err}") from err
        return cls.from_dict(document)

    @classmethod
    def load(cls, path: Path | str) -> TrustList:
        """`ota_keys.json` (or a file of PEM public keys, which the fleet's FLEET_OTA_KEYS is)."""
        text = Path(path).read_text()
        if "-----BEGIN" in text:
            return cls(tuple(public_keys_from_pem(text)))
        return cls.from_json(text)

    @classmethod
    def of(cls, keys: Iterable[PublicKey]) -> TrustList:
        return cls(tuple(keys))


# PEM public keys, read without a crypto library: the fleet and the tools load the signer's .pub.pem
_PEM_BLOCK = re.compile(r"-----BEGIN (RSA )?PUBLIC KEY-----([A-Za-z0-9+/=\s]+?)-----END \1?PUBLIC KEY-----")
_RSA_ENCRYPTION_OID = bytes.fromhex("06092a864886f70d010101")


def _der_item(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """The content of the DER item of `tag` at `pos`, and the position after it."""
    if pos + 2 > len(data) or data[pos] != tag:
        raise TrustListError("not an RSA public key (unexpected DER)")
    length, pos = data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise TrustListError("not an RSA public key (bad DER length)")
        length, pos = int.from_bytes(data[pos:pos + count], "big"), pos + count
    if pos + length > len(data):
        raise TrustListError("not an RSA public key (truncated DER)")
    return data[pos:pos + length], pos + length


def _rsa_public_key(der: bytes) -> PublicKey:
    """PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }."""
    body, _ = _der_item(der, 0, 0x30)
    n_bytes, pos = _der_item(body, 0, 0x02)
    e_bytes, _ = _der_item(body, pos, 0x02)
    if int.from_bytes(e_bytes, "big") != PUBLIC_EXPONENT:
        raise TrustListError(f"an RSA key for releases has the public exponent {PUBLIC_EXPONENT}")
    return PublicKey(int.from_bytes(n_bytes, "big"))


def public_keys_from_pem(text: str) -> list[PublicKey]:
    """Every RSA public key in PEM text (`PUBLIC KEY`, i.e. SubjectPublicKeyInfo, or `RSA PUBLIC KEY`)."""
    keys: list[PublicKey] = []
    for match in _PEM_BLOCK.finditer(text):
        try:
            der = base64.b64decode("".join(match.group(2).split()), validate=True)
        except binascii.Error as err:
            raise TrustListError("a PEM block that is not base64") from err
        if match.group(1):
            keys.append(_rsa_public_key(der))
            continue
        spki, _ = _der_item(der, 0, 0x30)
        algorithm, pos = _der_item(spki, 0, 0x30)
        if not algorithm.startswith(_RSA_ENCRYPTION_OID):
            raise TrustListError(f"not an RSA key: releases are signed with RSA-{KEY_BITS}")
        bits, _ = _der_item(spki, pos, 0x03)
        if not bits or bits[0] != 0:
            raise TrustListError("not an RSA public key (bad BIT STRING)")
        keys.append(_rsa_public_key(bits[1:]))
    if not keys:
        raise TrustListError("no PEM public key found")
    return keys


# versions -----------------------------------------------------------------------------------
def parse_version(text: object) -> Version:
    """`"1.2.3"` -> (1, 2, 3); ValueError for anything but MAJOR.MINOR.PATCH in plain decimals."""
    found = _VERSION.fullmatch(text) if isinstance(text, str) else None
    if not found:
        raise ValueError("a version is MAJOR.MINOR.PATCH: decimal integers without leading zeros")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def _as_version(value: str | Version) -> Version:
    return value if isinstance(value, tuple) else parse_version(value)


# metadata -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReleaseFile:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class ReleaseMeta:
    """A release's metadata, after its signature checked and its fields were validated."""

    text: str  # exactly what was signed
    kind: str
    classes: tuple[str, ...]
    version: Version
    min_version: Version
    floor: Version
    expires: int
    key: str
    files: tuple[ReleaseFile, ...]
    keys: TrustList | None  # the trust list after this release (key rotation), if it sets one
    signed_by: tuple[str, ...] = ()  # the trusted key ids whose signatures checked

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)

    @property
    def name(self) -> str:
        """`esp32-0.2.0`: how the fleet and the progress reports name a release."""
        return f"{self.kind}-{self.version_text}"

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files)


def _bad(msg: str) -> ReleaseRefused:
    return ReleaseRefused("bad_meta", msg)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _meta_version(document: Mapping[str, Any], field: str) -> Version:
    try:
        return parse_version(document[field])
    except ValueError as err:
        raise _bad(f"{field}: {err}") from None


def check_path(path: object) -> str | None:
    """What is wrong with a file path of a release, or None (docs/ota.md: relative, `[A-Za-z0-9_./-]`,
    at most 64 characters, no empty, `.` or `..` part, no leading `/`)."""
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        return f"a path is 1 to {PATH_MAX} characters of A-Z a-z 0-9 _ . / -"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "a path is relative, with no empty, '.' or '..' part"
    return None


def _parse_file(entry: Any, index: int) -> ReleaseFile:
    where = f"files[{index}]"
    if not isinstance(entry, dict) or set(entry) != FILE_FIELDS:
        raise _bad(f'{where}: an object with exactly "path", "sha256" and "size"')
    problem = check_path(entry["path"])
    if problem:
        raise _bad(f"{where}.path: {problem}")
    if not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"]):
        raise _bad(f"{where}.sha256: 64 lowercase hex digits")
    if not _is_int(entry["size"]) or not 0 <= entry["size"] < FILE_SIZE_MAX:
        raise _bad(f"{where}.size: an integer number of bytes, 0 or more")
    return ReleaseFile(entry["path"], entry["sha256"], entry["size"])


def parse_meta(text: str, signed_by: Sequence[str] = ()) -> ReleaseMeta:
    """Validate metadata text whose signature checked (ReleaseRefused `bad_meta` if it is malformed).

    Call verify_release() instead: it checks the signature first, then calls this.
    """
    try:
        document = strict_json.loads(text.encode("utf-8"))
    except (ContractError, UnicodeEncodeError) as err:
        raise _bad(f"not JSON: {err}") from None
    if not isinstance(document, dict):
        raise _bad("the metadata is a JSON object")
    missing = sorted(META_FIELDS - META_OPTIONAL - set(document))
    if missing:
        raise _bad(f"missing field {missing[0]}")
    unknown = sorted(set(document) - META_FIELDS)
    if unknown:
        raise _bad("an unknown field")  # not named: it is the sender's text
    if document["type"] != RELEASE_TYPE:
        raise _bad(f'type: must be "{RELEASE_TYPE}"')
    kind = document["kind"]
    if kind not in KINDS:
        raise _bad(f"kind: one of {', '.join(KINDS)}")
    classes = document["classes"]
    if (not isinstance(classes, list) or not 1 <= len(classes) <= CLASSES_MAX
            or not all(isinstance(name, str) and _CLASS.fullmatch(name) for name in classes)
            or len(set(classes)) != len(classes)):
        raise _bad(f"classes: 1 to {CLASSES_MAX} distinct names of [a-z0-9_-]{{1,32}}")
    version = _meta_version(document, "version")
    min_version = _meta_version(document, "min_version")
    floor = _meta_version(document, "floor")
    if min_version > version or floor > version:
        raise _bad("min_version and floor: at most the version itself")
    expires = document["expires"]
    if not _is_int(expires) or not 0 < expires < EXPIRES_MAX:
        raise _bad("expires: Unix seconds, a positive integer")
    key = document["key"]
    if not isinstance(key, str) or not _KEY_ID.fullmatch(key):
        raise _bad("key: a key id, 16 lowercase hex digits")
    entries = document["files"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= FILES_MAX:
        raise _bad(f"files: 1 to {FILES_MAX} entries")
    files = tuple(_parse_file(entry, index) for index, entry in enumerate(entries))
    paths = [entry.path for entry in files]
    if len(set(paths)) != len(paths):
        raise _bad("files: a path listed twice")
    if kind == "esp32" and ESP32_ENTRY not in paths:
        raise _bad(f"files: an esp32 release has {ESP32_ENTRY}")
    if kind == "pi" and len(files) != 1:
        raise _bad("files: a pi release is exactly one file")
    keys = None
    if "keys" in document:
        try:
            keys = TrustList.from_entries(document["keys"])
        except TrustListError as err:
            raise _bad(f"keys: {err}") from None
    return ReleaseMeta(text=text, kind=kind, classes=tuple(classes), version=version, min_version=min_version,
                       floor=floor, expires=expires, key=key, files=files, keys=keys, signed_by=tuple(signed_by))


def meta_bytes(meta_text: object) -> bytes:
    """The signed bytes of metadata text (UTF-8, at most 8192 bytes), or ReleaseRefused `bad_meta`."""
    if isinstance(meta_text, bytes):
        data = meta_text
    elif isinstance(meta_text, str):
        try:
            data = meta_text.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad("the metadata is not UTF-8 text") from None
    else:
        raise _bad("the metadata is text")
    if len(data) > META_MAX_BYTES:
        raise _bad(f"the metadata is longer than {META_MAX_BYTES} bytes")
    return data


def _signature_bytes(sig: object) -> bytes | None:
    if not isinstance(sig, str) or len(sig) > 4 * ((KEY_BYTES + 2) // 3) + 4:
        return None
    try:
        return base64.b64decode(sig, validate=True)
    except binascii.Error:
        return None


def verify_release(meta_text: str | bytes, sigs: Any, trust: TrustList) -> ReleaseMeta:
    """Check a signed release against `trust`; return its validated metadata.

    In order (docs/ota.md, "Verifying"): the metadata must be text of at most 8192 bytes
    (`bad_meta`); `sigs` a list of 1 to 4 signatures (`unsigned` when empty or absent,
    `bad_signature` when longer). A signature is checked only against the key it names; one that
    checks is enough. None by a trusted key: `unknown_key`; some by a trusted key, none checks:
    `bad_signature`. Only then is the metadata parsed (`bad_meta`).
    """
    data = meta_bytes(meta_text)
    if sigs is None or sigs == [] or not isinstance(sigs, list):
        raise ReleaseRefused("unsigned", "the release carries no signature")
    if len(sigs) > SIGS_MAX:
        raise ReleaseRefused("bad_signature", f"more than {SIGS_MAX} signatures")
    tried = 0
    good: list[str] = []
    for entry in sigs:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            continue
        key = trust.get(entry["key"])
        if key is None:
            continue
        tried += 1
        signature = _signature_bytes(entry.get("sig"))
        if signature is not None and key.verifies(data, signature) and key.id not in good:
            good.append(key.id)
    if not good:
        if tried:
            raise ReleaseRefused("bad_signature", "no signature by a trusted key checks")
        raise ReleaseRefused("unknown_key", "no signature is by a key this device trusts")
    return parse_meta(data.decode("utf-8"), good)


# the device's checks ------------------------------------------------------------------------
def check_offer_for_device(meta: ReleaseMeta, kind: str, device_class: str, running_version: str | Version,
                           floor: str | Version | None, now_s: int | float | None) -> None:
    """May this device install `meta`? ReleaseRefused with the first reason it may not, in this order:

    `wrong_kind`, `wrong_class`, `same_version` (already running it: the caller answers
    `confirmed`), `downgrade` (below the running version or the device's floor), `too_old` (the
    running version is below `min_version`), `no_clock` (`now_s` None or before 2023-11-14),
    `expired` (`now_s` at or after `expires`).
    """
    if meta.kind != kind:
        raise ReleaseRefused("wrong_kind", f"a {meta.kind} release, this device is {kind}")
    if device_class not in meta.classes:
        raise ReleaseRefused("wrong_class", f"not for the device class {device_class}")
    running = _as_version(running_version)
    if meta.version == running:
        raise ReleaseRefused("same_version", f"already running {meta.version_text}")
    if meta.version < running:
        raise ReleaseRefused("downgrade", f"{meta.version_text} is below the running version")
    if floor is not None and meta.version < _as_version(floor):
        raise ReleaseRefused("downgrade", f"{meta.version_text} is below this device's floor")
    if running < meta.min_version:
        raise ReleaseRefused("too_old", "the running version is below the release's min_version")
    if now_s is None or now_s < CLOCK_SET_AFTER_S:
        raise ReleaseRefused("no_clock", "the device's clock is not set")
    if now_s >= meta.expires:
        raise ReleaseRefused("expired", "the release's metadata has expired")
