# Release verification on the board (docs/ota.md): RSA-3072 PKCS#1 v1.5 signatures over SHA-256
# against the trust list ota_keys.json, then the signed metadata's checks. Pure: no socket, no
# device, so tests run it on the unix port against the CPython twin's vectors
# (contract/release.py). Imported only while an offer is checked; the whole encoded block is
# compared byte for byte, never parsed (no padding-oracle or lax-parser forgeries). The metadata
# is read from a stream (ota_json.py), one member and one file entry at a time: parsed whole, a
# 31-file slot's metadata takes 12 KB of heap on this port.
import binascii
import hashlib
import io
import json

from micropython import const

KEYS = "ota_keys.json"
_K = const(384)  # bytes of an RSA-3072 modulus and signature
_MAX_SIGS = const(4)
_MAX_FILES = const(64)
_MAX_META = const(8192)  # bytes of UTF-8
_CLOCK_SET_AFTER_S = const(1700000000)  # an earlier clock was never set (an ESP32 starts at 2000)
_BIG = 1 << 40  # expires and sizes stay below this
# DER of DigestInfo(sha256) before the 32-byte hash (RFC 8017 §9.2 note 1)
_DIGEST_INFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-"
_CLASS_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"
_HEX = "0123456789abcdef"
_FIELDS = ("type", "kind", "classes", "version", "min_version", "floor", "expires", "key", "files",
           "keys")


def rsa_ok(n, sig, digest):
    # sig^65537 mod n must be exactly 00 01 FF..FF 00 DigestInfo H, compared in place (no copy
    # of the expected block: the heap of an update boot is short of 400-byte holes).
    if len(sig) != _K:
        return False
    s = int.from_bytes(sig, "big")
    if s >= n:
        return False
    em = pow(s, 65537, n).to_bytes(_K, "big")
    pad = _K - 3 - len(_DIGEST_INFO) - 32
    if em[0] != 0 or em[1] != 1 or em[pad + 2] != 0:
        return False
    for i in range(2, pad + 2):
        if em[i] != 0xFF:
            return False
    j = pad + 3
    for i in range(len(_DIGEST_INFO)):
        if em[j + i] != _DIGEST_INFO[i]:
            return False
    j += len(_DIGEST_INFO)
    for i in range(32):
        if em[j + i] != digest[i]:
            return False
    return True


def trust_list(path=KEYS):
    # The keys of ota_keys.json ({"keys": [{"id", "n"}, ...]}), or [] when it is missing or not
    # a valid trust list: a device trusts nothing from a damaged one.
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return []
    if isinstance(doc, dict) and len(doc) == 1 and _keys(doc.get("keys")):
        return doc["keys"]
    return []


def signature(digest, sigs, keys):
    # None when one signature by a key of `keys` checks the metadata's SHA-256 `digest`, else the
    # refusal code. A signature is checked only against the key it names.
    if not isinstance(sigs, list) or not sigs:
        return "unsigned"
    if len(sigs) > _MAX_SIGS:
        return "bad_signature"
    known = False
    for s in sigs:
        if not isinstance(s, dict) or not isinstance(s.get("key"), str):
            continue
        for k in keys:
            if isinstance(k, dict) and k.get("id") == s["key"]:
                known = True
                try:
                    if rsa_ok(int(k["n"], 16), binascii.a2b_base64(s["sig"]), digest):
                        return None
                except (KeyError, TypeError, ValueError):
                    pass
                break
    return "bad_signature" if known else "unknown_key"


def version(s):
    # "MAJOR.MINOR.PATCH" -> (major, minor, patch), compared as numbers; None if malformed
    # (decimal, at most nine digits, no leading zeros).
    if not isinstance(s, str):
        return None
    parts = s.split(".")
    if len(parts) != 3:
        return None
    out = []
    for p in parts:
        if not p or len(p) > 9 or not _only(p, "0123456789") or p[0] == "0" and len(p) > 1:
            return None
        out.append(int(p))
    return tuple(out)


def _only(text, chars):
    for c in text:
        if c not in chars:
            return False
    return True


def _int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _keys(keys):
    # The trust list a release sets (key rotation): 1..4 RSA-3072 keys {"id", "n"}, each id the
    # first 16 hex digits of SHA-256 of the modulus (384 bytes, big-endian).
    if not isinstance(keys, list) or not 1 <= len(keys) <= 4:
        return False
    seen = []
    for k in keys:
        if not isinstance(k, dict) or len(k) != 2:
            return False
        n = k.get("n")
        if not isinstance(n, str) or len(n) != 768 or not _only(n, _HEX) or n[0] < "8" or n[-1] not in "13579bdf":
            return False
        kid = binascii.hexlify(hashlib.sha256(int(n, 16).to_bytes(_K, "big")).digest()[:8]).decode()
        if k.get("id") != kid or kid in seen:
            return False
        seen.append(kid)
    return True


def _file(e):
    # (path, sha256, size) of a checked file entry; ValueError: bad_meta.
    path = e.get("path")
    sha = e.get("sha256")
    size = e.get("size")
    if (len(e) != 3 or not isinstance(path, str) or not 0 < len(path) <= 64
            or not _only(path, _PATH_CHARS) or not _int(size) or not 0 <= size < _BIG
            or not isinstance(sha, str) or len(sha) != 64 or not _only(sha, _HEX)):
        raise ValueError("bad file entry")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ValueError("bad path")
    return path, sha, size


def read_meta(stream, on_file=None, dups=True):
    # The metadata's members but its files (a dict, "files" the number of them), each file entry
    # checked and handed to on_file(path, sha256, size) in order; ValueError: bad_meta. No path
    # twice: the hashes of the paths seen are kept, and a repeated hash is looked at again.
    r = __import__("ota_json").Reader(stream)
    head = {}
    hashes = set()
    dup = []
    app = False
    for k in r.members():
        b = r.ws()
        if k not in _FIELDS:
            raise ValueError("unknown field")
        if k != "files":
            head[k] = r.value(b, 4096 if k == "keys" else 512)
            continue
        r.i -= 1  # items() reads the bracket again
        n = 0
        for b in r.items():
            if b != 0x7B:
                raise ValueError("a file entry is an object")
            path, sha, size = _file(r.value(b, 256))
            h = hash(path)
            if h in hashes:
                dup.append(path)
            hashes.add(h)
            n += 1
            if n > _MAX_FILES:
                raise ValueError("too many files")
            app = app or path == "app.mpy"
            if on_file:
                on_file(path, sha, size)
        head["files"] = n
        head["app"] = app
    r.end()
    if dup and dups:  # a hash seen twice: the same path twice, or two paths with one hash
        stream.seek(0)
        for path in dup:
            seen = [0]

            def count(p, sha, size, path=path, seen=seen):
                seen[0] += p == path
            read_meta(stream, count, False)
            if seen[0] > 1:
                raise ValueError("a path twice")
    return head


def _bad_head(h):
    # True when the head (split()) is malformed.
    for k in _FIELDS[:-1]:
        if k not in h:
            return True
    classes = h["classes"]
    v = version(h["version"])
    lo = version(h["min_version"])
    fl = version(h["floor"])
    key = h["key"]
    if (h["type"] != "ioc-release" or h["kind"] not in ("esp32", "pi")
            or not isinstance(classes, list) or not 1 <= len(classes) <= 8
            or v is None or lo is None or fl is None or lo > v or fl > v
            or not _int(h["expires"]) or not 0 < h["expires"] < _BIG
            or not isinstance(key, str) or len(key) != 16 or not _only(key, _HEX)):
        return True
    for i, c in enumerate(classes):
        if not isinstance(c, str) or not 0 < len(c) <= 32 or not _only(c, _CLASS_CHARS) or c in classes[:i]:
            return True
    if not h["files"] or h["kind"] == "esp32" and not h["app"] or h["kind"] == "pi" and h["files"] != 1:
        return True
    return "keys" in h and not _keys(h["keys"])


def check_device(h, fw, floor, cls, now_s, kind="esp32"):
    # The device's refusal code for a valid head, or None: in contract/release.py's order.
    # "same_version": already running it (answered confirmed).
    if h["kind"] != kind:
        return "wrong_kind"
    if cls not in h["classes"]:
        return "wrong_class"
    v = version(h["version"])
    running = version(fw)
    if v == running:
        return "same_version"
    if v < running or floor is not None and v < version(floor):
        return "downgrade"
    if running < version(h["min_version"]):
        return "too_old"
    if now_s is None or now_s < _CLOCK_SET_AFTER_S:
        return "no_clock"
    if now_s >= h["expires"]:
        return "expired"
    return None


def verify(meta, sigs, keys):
    # (refusal code or None, head or None) for (metadata text, signatures) against the trust
    # list `keys`. The metadata is parsed only after a signature checked.
    if not isinstance(meta, str) or len(memoryview(meta)) > _MAX_META:
        return "bad_meta", None
    why = signature(hashlib.sha256(meta).digest(), sigs, keys)
    if why:
        return why, None
    return meta_verdict(io.BytesIO(meta.encode()))


def meta_verdict(stream, on_file=None):
    # ("bad_meta", None) or (None, head) for metadata whose signature checked.
    try:
        head = read_meta(stream, on_file)
        if _bad_head(head):
            return "bad_meta", None
    except (ValueError, TypeError, AttributeError, KeyError):
        return "bad_meta", None
    return None, head


def check(meta, sigs, keys, fw, floor, cls, now_ms, kind="esp32"):
    # verify(), then check_device() for this board (its clock in Unix ms, None: not set).
    why, head = verify(meta, sigs, keys)
    if why:
        return why, None
    return check_device(head, fw, floor, cls, None if now_ms is None else now_ms // 1000, kind), head
