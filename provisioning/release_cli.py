"""`provision release keygen|build|sign|verify|trust`: the command line of provisioning/release.py.

One line per result on stdout; a problem is `provision: message` (provisioning/cli.py) with the
exit status of provisioning.errors; `verify` prints one line per problem found, then fails with 14.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from provisioning.errors import ProvisionError, ReleaseInvalid
from provisioning.progress import Reporter
from provisioning.release import (
    DEFAULT_EXPIRES_DAYS,
    BuildRequest,
    build_release,
    keygen,
    sign_release,
    trust_list,
    verify_release_dir,
    write_trust,
)


def do_keygen(args: argparse.Namespace) -> int:
    pub, ident = keygen(args.out)
    print(f"ok key {ident}: private key {args.out} (0600, keep it offline), public key {pub}", flush=True)
    return 0


def do_build(args: argparse.Namespace) -> int:
    request = BuildRequest(kind=args.kind, version=args.version, out=args.out, min_version=args.min_version,
                           floor=args.floor, expires_days=args.expires_days, classes=tuple(args.device_class),
                           next_keys=tuple(args.next_keys), signer=args.signer, bundle=args.from_bundle,
                           wheels=args.wheels)
    out, meta = build_release(request)
    size = sum(entry["size"] for entry in meta["files"])
    expires = time.strftime("%Y-%m-%d", time.gmtime(meta["expires"]))
    rotation = f", next trust list {len(meta['keys'])} keys" if "keys" in meta else ""
    print(f"ok {meta['kind']}-{meta['version']} for {', '.join(meta['classes'])}: {len(meta['files'])} files, "
          f"{size} bytes, expires {expires}{rotation}; unsigned in {out} (next: provision release sign)", flush=True)
    return 0


def do_sign(args: argparse.Namespace) -> int:
    signed, ids = sign_release(args.folder, args.key)
    print(f"ok signed by {', '.join(ids)}: {signed}", flush=True)
    return 0


def do_verify(args: argparse.Namespace) -> int:
    report = verify_release_dir(args.folder, trust_list(args.trust))
    for problem in report.problems:
        print(f"{args.folder}: {problem}", flush=True)
    if report.problems:
        raise ReleaseInvalid(f"{args.folder}: {len(report.problems)} problem(s); devices would refuse this release")
    print(f"ok {report.name}: signed by {', '.join(report.signed_by)}, {report.files} files, {report.size} bytes "
          "checked", flush=True)
    return 0


def do_trust(args: argparse.Namespace) -> int:
    trust = write_trust(args.public_keys, args.out)
    print(f"ok {args.out}: {len(trust.keys)} keys ({', '.join(trust.ids)})", flush=True)
    return 0


HANDLERS = {"keygen": do_keygen, "build": do_build, "sign": do_sign, "verify": do_verify, "trust": do_trust}


def do_release(args: argparse.Namespace, reporter: Reporter) -> int:
    if args.release_command is None:
        raise ProvisionError("release: give keygen, build, sign, verify or trust (provision release --help)")
    return HANDLERS[args.release_command](args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="release_command", metavar="STEP")
    key = sub.add_parser("keygen", help="a new RSA-3072 release key (private 0600, and its .pub.pem)")
    key.add_argument("--out", type=Path, required=True, metavar="KEY.pem", help="never overwritten")

    build = sub.add_parser("build", help="build an unsigned release folder (meta.json, files/)")
    build.add_argument("--kind", required=True, choices=("esp32", "pi"))
    build.add_argument("--version", required=True, metavar="X.Y.Z")
    build.add_argument("--out", type=Path, required=True, help="an empty or new folder")
    build.add_argument("--min-version", default="0.0.0", metavar="X.Y.Z",
                       help="the lowest running version it may replace (default 0.0.0)")
    build.add_argument("--floor", default="0.0.0", metavar="X.Y.Z",
                       help="once committed, a device never installs below this (default 0.0.0)")
    build.add_argument("--expires-days", type=float, default=DEFAULT_EXPIRES_DAYS, metavar="N",
                       help=f"devices refuse the release after N days (default {DEFAULT_EXPIRES_DAYS})")
    build.add_argument("--class", dest="device_class", action="append", default=[], metavar="C",
                       help="a device class it is for; repeatable (default: esp32, or the bundle's Pi target)")
    build.add_argument("--from-bundle", type=Path, metavar="BUNDLE_DIR", help="pi: the wheels of a pi-bundle")
    build.add_argument("--wheels", type=Path, metavar="DIR", help="pi: a folder of wheels (needs --class)")
    build.add_argument("--next-keys", type=Path, nargs="+", default=[], metavar="PUB.pem",
                       help="key rotation: the trust list devices hold after committing this release")
    build.add_argument("--signer", type=Path, metavar="PUB.pem",
                       help="the key that will sign, for the metadata's key field (default: set by sign)")

    sign = sub.add_parser("sign", help="sign a built release: release.json")
    sign.add_argument("folder", type=Path, metavar="DIR")
    sign.add_argument("--key", type=Path, action="append", required=True, metavar="KEY.pem",
                      help="a private release key; repeatable (a folder signed before gains signatures)")

    verify = sub.add_parser("verify", help="check a signed release's signatures and files as a device would")
    verify.add_argument("folder", type=Path, metavar="DIR")
    verify.add_argument("--trust", type=Path, nargs="+", required=True, metavar="FILE",
                        help="ota_keys.json or PEM public keys")

    trust = sub.add_parser("trust", help="write a trust list (ota_keys.json) of public keys")
    trust.add_argument("public_keys", type=Path, nargs="+", metavar="PUB.pem")
    trust.add_argument("--out", type=Path, required=True, metavar="ota_keys.json")
