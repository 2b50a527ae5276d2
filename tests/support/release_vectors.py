"""Make contract/vectors/release/vectors.json: signed releases and what every verifier must answer.

    .venv/bin/python -m tests.support.release_vectors     # writes the file again (new keys)

The CPython verifier (contract/release.py) and the ESP32's (firmware/app_a/ota_verify.py) both
read the file in their tests, so they cannot drift apart. Three test keys are made each run (A, B
trusted in some lists, C never); only their public halves are written. The cases:

- `verify`: (trust list, metadata text, signatures) -> "ok" or the refusal code of docs/ota.md;
- `device`: a verified release and a device (kind, class, running version, floor, clock) ->
  "ok" or the refusal code of check_offer_for_device;
- `trust_lists`: an `ota_keys.json` document -> valid or not.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from contract.release import KEY_BYTES, META_MAX_BYTES, PublicKey, key_id

OUT = Path(__file__).resolve().parents[2] / "contract" / "vectors" / "release" / "vectors.json"
EXPIRES = 1798761600  # 2027-01-01
NOW = 1790000000  # a set clock before EXPIRES
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


class Signer:
    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        self.public = PublicKey(self.private.public_key().public_numbers().n)
        self.id = self.public.id

    def sign(self, text: str | bytes) -> str:
        data = text.encode() if isinstance(text, str) else text
        return base64.b64encode(self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()

    def sig(self, text: str) -> dict[str, str]:
        return {"key": self.id, "sig": self.sign(text)}


def meta_doc(key_id_: str, /, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "ioc-release", "kind": "esp32", "classes": ["esp32"], "version": "0.2.0",
                           "min_version": "0.1.0", "floor": "0.1.0", "expires": EXPIRES, "key": key_id_,
                           "files": [{"path": "roles/light.mpy", "sha256": SHA, "size": 4012},
                                     {"path": "app.mpy", "sha256": SHA, "size": 1210}]}
    for name, value in changes.items():
        if value is None:
            doc.pop(name, None)
        else:
            doc[name] = value
    return doc


def text_of(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def make() -> dict[str, Any]:
    a, b, c = Signer(), Signer(), Signer()
    trusts = {"a": {"keys": [a.public.to_entry()]}, "ab": {"keys": [a.public.to_entry(), b.public.to_entry()]},
              "b": {"keys": [b.public.to_entry()]}}
    good = text_of(meta_doc(a.id))
    verify: list[dict[str, Any]] = []

    def case(name: str, meta: str, sigs: Any, expect: str, trust: str = "a") -> None:
        verify.append({"name": name, "trust": trust, "meta": meta, "sigs": sigs, "expect": expect})

    def signed_meta(name: str, doc: Any, expect: str = "bad_meta") -> None:
        text = doc if isinstance(doc, str) else text_of(doc)
        case(name, text, [a.sig(text)], expect)

    # signatures
    case("good", good, [a.sig(good)], "ok")
    case("good_pretty_printed", json.dumps(meta_doc(a.id), indent=2),
         [a.sig(json.dumps(meta_doc(a.id), indent=2))], "ok")
    case("good_by_second_trusted_key", good, [b.sig(good)], "ok", trust="ab")
    case("good_two_sigs_one_trusted", good, [a.sig(good), b.sig(good)], "ok")
    case("good_untrusted_sig_first", good, [c.sig(good), a.sig(good)], "ok")
    case("good_bad_trusted_sig_then_good", good,
         [{"key": a.id, "sig": base64.b64encode(bytes(KEY_BYTES)).decode()}, a.sig(good)], "ok")
    case("good_four_sigs", good, [c.sig(good), b.sig(good), {"key": c.id, "sig": "AA=="}, a.sig(good)], "ok")
    case("unsigned_empty_list", good, [], "unsigned")
    case("unsigned_null", good, None, "unsigned")
    case("unsigned_not_a_list", good, {"key": a.id, "sig": a.sign(good)}, "unsigned")
    case("five_sigs", good, [a.sig(good)] * 5, "bad_signature")
    case("unknown_key", good, [c.sig(good)], "unknown_key")
    case("old_key_retired", good, [a.sig(good)], "unknown_key", trust="b")
    case("entry_not_an_object", good, ["x", 1], "unknown_key")
    case("entry_key_not_text", good, [{"key": 7, "sig": a.sign(good)}], "unknown_key")
    case("entry_without_key", good, [{"sig": a.sign(good)}], "unknown_key")
    case("other_key_labelled_trusted", good, [{"key": a.id, "sig": c.sign(good)}], "bad_signature")
    case("sig_of_trusted_key_under_other_trusted_id", good, [{"key": b.id, "sig": a.sign(good)}], "bad_signature",
         trust="ab")
    tampered = good.replace('"0.2.0"', '"0.3.0"')
    case("tampered_meta", tampered, [a.sig(good)], "bad_signature")
    case("meta_reserialised", text_of(json.loads(good)) + " ", [a.sig(good)], "bad_signature")
    raw = base64.b64decode(a.sign(good))
    case("truncated_sig", good, [{"key": a.id, "sig": base64.b64encode(raw[:-1]).decode()}], "bad_signature")
    case("sig_with_leading_zero_byte", good, [{"key": a.id, "sig": base64.b64encode(b"\0" + raw).decode()}],
         "bad_signature")
    case("sig_flipped_bit", good,
         [{"key": a.id, "sig": base64.b64encode(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:]).decode()}],
         "bad_signature")
    case("sig_zero", good, [{"key": a.id, "sig": base64.b64encode(bytes(KEY_BYTES)).decode()}], "bad_signature")
    case("sig_one", good, [{"key": a.id, "sig": base64.b64encode((1).to_bytes(KEY_BYTES, "big")).decode()}],
         "bad_signature")
    case("sig_is_modulus", good, [{"key": a.id, "sig": base64.b64encode(a.public.n.to_bytes(KEY_BYTES, "big"))
                                   .decode()}], "bad_signature")
    case("sig_not_base64", good, [{"key": a.id, "sig": "!!!!"}], "bad_signature")
    case("sig_not_text", good, [{"key": a.id, "sig": 12}], "bad_signature")
    case("sig_missing", good, [{"key": a.id}], "bad_signature")
    case("sig_empty", good, [{"key": a.id, "sig": ""}], "bad_signature")
    # size: exactly at the bound is fine, one byte over is refused even with a good signature
    at_bound = good + " " * (META_MAX_BYTES - len(good))
    case("meta_at_8192_bytes", at_bound, [a.sig(at_bound)], "ok")
    over = at_bound + " "
    case("meta_8193_bytes", over, [a.sig(over)], "bad_meta")
    # metadata malformed after a good signature
    files = meta_doc(a.id)["files"]
    signed_meta("not_json", good[:-1])
    signed_meta("not_an_object", [meta_doc(a.id)])
    for name in ("type", "kind", "classes", "version", "min_version", "floor", "expires", "key", "files"):
        signed_meta(f"missing_{name}", meta_doc(a.id, **{name: None}))
    signed_meta("unknown_field", {**meta_doc(a.id), "note": "x"})
    signed_meta("wrong_type", meta_doc(a.id, type="ioc-update"))
    signed_meta("unknown_kind", meta_doc(a.id, kind="esp8266"))
    signed_meta("classes_empty", meta_doc(a.id, classes=[]))
    signed_meta("classes_not_a_list", meta_doc(a.id, classes="esp32"))
    signed_meta("class_uppercase", meta_doc(a.id, classes=["ESP32"]))
    signed_meta("class_too_long", meta_doc(a.id, classes=["e" * 33]))
    signed_meta("class_with_underscore", meta_doc(a.id, classes=["pi-x86_64"]), "ok")
    signed_meta("class_with_dot", meta_doc(a.id, classes=["pi.x86"]))
    signed_meta("class_twice", meta_doc(a.id, classes=["esp32", "esp32"]))
    signed_meta("nine_classes", meta_doc(a.id, classes=[f"c{i}" for i in range(9)]))
    signed_meta("version_two_parts", meta_doc(a.id, version="0.2"))
    signed_meta("version_leading_zero", meta_doc(a.id, version="0.02.0"))
    signed_meta("version_ten_digits", meta_doc(a.id, version="1234567890.0.0"))
    signed_meta("version_number", meta_doc(a.id, version=2))
    signed_meta("version_suffix", meta_doc(a.id, version="0.2.0-rc1"))
    signed_meta("min_version_above_version", meta_doc(a.id, min_version="0.3.0"))
    signed_meta("floor_above_version", meta_doc(a.id, floor="0.2.1"))
    signed_meta("expires_float", meta_doc(a.id, expires=1798761600.5))
    signed_meta("expires_text", meta_doc(a.id, expires="1798761600"))
    signed_meta("expires_bool", meta_doc(a.id, expires=True))
    signed_meta("expires_zero", meta_doc(a.id, expires=0))
    signed_meta("key_uppercase", meta_doc(a.id, key=a.id.upper()))
    signed_meta("key_short", meta_doc(a.id, key=a.id[:15]))
    signed_meta("files_empty", meta_doc(a.id, files=[]))
    signed_meta("files_not_a_list", meta_doc(a.id, files=files[1]))
    for name, path in (("path_parent", "../app.mpy"), ("path_parent_inside", "roles/../../x.mpy"),
                       ("path_absolute", "/roles/light.mpy"), ("path_empty_part", "roles//light.mpy"),
                       ("path_dot_part", "./roles/light.mpy"), ("path_trailing_slash", "roles/"),
                       ("path_space", "roles/li ght.mpy"), ("path_backslash", "roles\\light.mpy"),
                       ("path_65_chars", "r/" + "x" * 59 + ".mpy"), ("path_empty", ""), ("path_not_text", 5)):
        signed_meta(name, meta_doc(a.id, files=[{"path": path, "sha256": SHA, "size": 1}, files[1]]))
    signed_meta("path_twice", meta_doc(a.id, files=[files[1], files[1]]))
    signed_meta("sha256_uppercase", meta_doc(a.id, files=[{**files[1], "sha256": SHA.upper()}]))
    signed_meta("sha256_short", meta_doc(a.id, files=[{**files[1], "sha256": SHA[:63]}]))
    signed_meta("size_negative", meta_doc(a.id, files=[{**files[1], "size": -1}]))
    signed_meta("size_float", meta_doc(a.id, files=[{**files[1], "size": 12.0}]))
    signed_meta("size_bool", meta_doc(a.id, files=[{**files[1], "size": False}]))
    signed_meta("size_text", meta_doc(a.id, files=[{**files[1], "size": "12"}]))
    signed_meta("file_extra_field", meta_doc(a.id, files=[{**files[1], "mode": 420}]))
    signed_meta("file_missing_size", meta_doc(a.id, files=[{"path": "app.mpy", "sha256": SHA}]))
    signed_meta("file_not_an_object", meta_doc(a.id, files=["app.mpy"]))
    signed_meta("esp32_without_app_mpy", meta_doc(a.id, files=[files[0]]))
    pi_file = {"path": "ioc-edge-0.2.0.tar", "sha256": SHA, "size": 30_000_000}
    pi = meta_doc(a.id, kind="pi", classes=["pi-arm64", "pi-armv7"], files=[pi_file])
    signed_meta("pi_good", pi, "ok")
    signed_meta("pi_two_files", {**pi, "files": [pi_file, {**pi_file, "path": "x.tar"}]})
    small = [{"path": f"m{i}", "sha256": SHA, "size": i} for i in range(64)]
    signed_meta("sixty_four_files", meta_doc(a.id, files=[*small[:63], files[1]]), "ok")
    signed_meta("sixty_five_files", meta_doc(a.id, files=[*small, files[1]]))
    # rotation: the trust list after the release
    signed_meta("keys_rotation", meta_doc(a.id, keys=[a.public.to_entry(), b.public.to_entry()]), "ok")
    signed_meta("keys_empty", meta_doc(a.id, keys=[]))
    signed_meta("keys_five", meta_doc(a.id, keys=[a.public.to_entry()] * 5))
    signed_meta("keys_twice", meta_doc(a.id, keys=[a.public.to_entry(), a.public.to_entry()]))
    signed_meta("keys_wrong_id", meta_doc(a.id, keys=[{"id": b.id, "n": a.public.to_entry()["n"]}]))
    signed_meta("keys_uppercase_n", meta_doc(a.id, keys=[{"id": a.id, "n": a.public.to_entry()["n"].upper()}]))
    signed_meta("keys_extra_field", meta_doc(a.id, keys=[{**a.public.to_entry(), "e": 65537}]))
    signed_meta("nan", good.replace(str(EXPIRES), "NaN"))
    signed_meta("non_ascii_text_field", json.dumps(meta_doc(a.id, classes=["espé32"]), ensure_ascii=False))
    # the file count is what the 65-file case tests, not the size
    for entry in verify:
        if entry["name"] in ("sixty_four_files", "sixty_five_files"):
            assert len(entry["meta"].encode()) <= META_MAX_BYTES, entry["name"]

    device: list[dict[str, Any]] = []

    def dev(name: str, expect: str, doc: dict[str, Any] | None = None, *, kind: str = "esp32",
            cls: str = "esp32", running: str = "0.1.0", floor: str | None = "0.1.0", now: int | None = NOW) -> None:
        text = text_of(doc if doc is not None else meta_doc(a.id))
        device.append({"name": name, "meta": text, "sigs": [a.sig(text)], "trust": "a",
                       "device": {"kind": kind, "class": cls, "running": running, "floor": floor, "now": now},
                       "expect": expect})

    dev("ok", "ok")
    dev("ok_without_floor", "ok", floor=None)
    dev("ok_patch_above_running_minor", "ok", meta_doc(a.id, version="0.10.0"), running="0.9.5",
        floor=None)  # compared as numbers: 0.10.0 > 0.9.5
    dev("pi_release_to_esp32", "wrong_kind", pi)
    dev("esp32_release_to_pi", "wrong_kind", kind="pi", cls="pi-arm64")
    dev("replayed_for_other_class", "wrong_class", pi, kind="pi", cls="pi-x86_64")
    dev("same_version", "same_version", running="0.2.0")
    dev("same_version_even_when_expired", "same_version", running="0.2.0", now=EXPIRES + 1)
    dev("downgrade_below_running", "downgrade", running="0.3.0")
    dev("downgrade_numeric_not_text", "downgrade", meta_doc(a.id, version="0.9.0", min_version="0.0.0",
                                                            floor="0.0.0"), running="0.10.0")
    dev("downgrade_below_floor", "downgrade", running="0.0.9", floor="0.3.0")
    dev("too_old", "too_old", meta_doc(a.id, min_version="0.1.5"), running="0.1.0")
    dev("no_clock", "no_clock", now=None)
    dev("clock_unset_year_2000", "no_clock", now=946684800 + 60)
    dev("expired", "expired", now=EXPIRES)
    dev("expired_later", "expired", now=EXPIRES + 86400)
    dev("one_second_before_expiry", "ok", now=EXPIRES - 1)

    e = a.public.to_entry()
    trust_lists = [
        {"name": "one_key", "doc": trusts["a"], "valid": True},
        {"name": "two_keys", "doc": trusts["ab"], "valid": True},
        {"name": "four_keys", "doc": {"keys": [a.public.to_entry(), b.public.to_entry(), c.public.to_entry(),
                                                {"id": PublicKey(a.public.n + 2).id,
                                                 "n": format(a.public.n + 2, "x")}]}, "valid": True},
        {"name": "no_keys", "doc": {"keys": []}, "valid": False},
        {"name": "five_keys", "doc": {"keys": [e] * 5}, "valid": False},
        {"name": "key_twice", "doc": {"keys": [e, e]}, "valid": False},
        {"name": "wrong_id", "doc": {"keys": [{"id": b.id, "n": e["n"]}]}, "valid": False},
        {"name": "short_modulus", "doc": {"keys": [{"id": key_id(a.public.n >> 8), "n": e["n"][2:]}]},
         "valid": False},
        {"name": "even_modulus", "doc": {"keys": [{"id": key_id(a.public.n + 1), "n": format(a.public.n + 1, "x")}]},
         "valid": False},
        {"name": "not_an_object", "doc": [e], "valid": False},
        {"name": "extra_field", "doc": {"keys": [e], "next": []}, "valid": False},
    ]
    return {"about": "Signed releases and what every verifier answers (docs/ota.md); made by "
                     "tests/support/release_vectors.py. Key A and B are trusted in some lists, C never.",
            "keys": {"A": a.id, "B": b.id, "C": c.id}, "now": NOW, "trusts": trusts,
            "verify": verify, "device": device, "trust_lists": trust_lists}


def main() -> int:
    vectors = make()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(vectors, indent=1, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(vectors['verify'])} verify cases, {len(vectors['device'])} device cases, "
          f"{len(vectors['trust_lists'])} trust lists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
