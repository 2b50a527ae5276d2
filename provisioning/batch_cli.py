"""`provision label`, `provision labels`, `provision batch prepare` and `provision flash --batch`.

    provision label --device ID [--asset A] [--ward W] [--date YYYY-MM-DD] --out FILE.png
    provision labels --batch FILE.csv --out SHEET.pdf [--png-dir DIR]
    provision batch prepare --count N --kind K --ward W [--site S] --broker URL (--ca-file F | --insecure-plaintext)
                            [--enroll-url URL] --out DIR          (at the depot: --fleet, an ops --token)
    provision flash --batch DIR --port P [--port P2 ...] [--label-dir DIR]   (in the field, no link)

The labels' QR codes open `{--public-url or --fleet}/assets/{asset}` (or `/devices/{id}`).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import sys
from pathlib import Path

from provisioning.batch import BatchFolder, BatchPlan, prepare
from provisioning.board import SerialBoard
from provisioning.broker_tls import parse_broker, read_ca_file
from provisioning.errors import BatchFailed, ProvisionError
from provisioning.flash import ESP32_KINDS, BlankBoards, Flasher, FlashRequest, FlashResult, board_transport
from provisioning.fleet_api import FleetClient
from provisioning.image import FirmwareImage
from provisioning.labels import make_label, read_label_list, save_png, save_sheet, write_labels
from provisioning.progress import Reporter

# Options that `flash --batch` takes from the batch: given with it, they are refused.
BATCH_DECIDES = ("kind", "site", "ward", "device_id", "new_identity", "broker", "insecure_plaintext", "offline",
                 "enrollment_token", "ca_file")


def public_url(args: argparse.Namespace) -> str:
    url = getattr(args, "public_url", None) or args.fleet
    if not url:
        raise ProvisionError("a label's QR code links to the fleet: give --public-url URL (or --fleet)")
    return str(url)


def _date(value: str | None) -> datetime.date | None:
    if not value:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError as err:
        raise ProvisionError("--date must be YYYY-MM-DD") from err


def do_label(args: argparse.Namespace, reporter: Reporter) -> int:
    label = make_label(public_url(args), args.device, asset=args.asset, ward=args.ward, date=_date(args.date))
    out = args.out or Path(f"{args.device}.png")
    save_png(label, out)
    print(f"label {out}: {label.line()}", flush=True)
    return 0


def do_labels(args: argparse.Namespace, reporter: Reporter) -> int:
    labels = read_label_list(args.batch, public_url(args))
    save_sheet(labels, args.out)
    if args.png_dir:
        write_labels(labels, args.png_dir)
    print(f"labels {args.out}: {len(labels)} labels" + (f"; PNGs in {args.png_dir}" if args.png_dir else ""),
          flush=True)
    return 0


def do_batch(args: argparse.Namespace, reporter: Reporter) -> int:
    if args.batch_command != "prepare":
        raise ProvisionError("batch: give a subcommand: prepare")
    if not args.fleet:
        raise ProvisionError("batch prepare is done at the depot, with a link to the fleet: give --fleet URL")
    if args.ca_file is None and not args.insecure_plaintext:
        raise ProvisionError("the boards speak TLS and must check their broker and fleet: give --ca-file FILE "
                             "(the CA that signed them); --insecure-plaintext only on a lab network")
    if args.ca_file is not None and args.insecure_plaintext:
        raise ProvisionError("--insecure-plaintext turns TLS off; drop --ca-file (or $PROVISION_BROKER_CA_FILE)")
    broker = parse_broker(args.broker, plaintext=args.insecure_plaintext)
    if broker.tls == args.insecure_plaintext:
        raise ProvisionError("--broker mqtt:// is plaintext: use mqtts://, or --insecure-plaintext on a lab network"
                             if not broker.tls else "--insecure-plaintext contradicts --broker mqtts://")
    enroll_url = args.enroll_url or args.fleet
    scheme = enroll_url.split("://", 1)[0]
    if scheme != ("http" if args.insecure_plaintext else "https"):
        raise ProvisionError(f"the boards enrol at {enroll_url}: " + (
            "with --insecure-plaintext they hold no CA to check an https:// fleet" if args.insecure_plaintext
            else "their enrollment tokens would cross the network readable; give the fleet's https:// URL "
                 "as --enroll-url, or --insecure-plaintext on a lab network"))
    plan = BatchPlan(count=args.count, kind=args.kind, site=args.site or args.ward, ward=args.ward,
                     broker=broker.url, enroll_url=enroll_url, public_url=public_url(args),
                     ca_pem=read_ca_file(args.ca_file) if args.ca_file else None,
                     insecure_plaintext=args.insecure_plaintext, ttl_hours=args.ttl_hours,
                     wifi_ssid=args.wifi_ssid, wifi_password=args.wifi_password)
    try:
        image = FirmwareImage.from_dir(args.firmware) if args.firmware else FirmwareImage.build()
    except (OSError, ValueError) as err:
        raise ProvisionError(f"cannot read the firmware image: {err}") from err
    with FleetClient(args.fleet, args.token, timeout=args.http_timeout) as fleet:
        entries = prepare(plan, args.out, fleet, image)
    print(f"ok batch {args.out}: {len(entries)} boards ({entries[0].device_id} .. {entries[-1].device_id}), "
          f"firmware {image.version}, labels {args.out / 'labels.pdf'}; tokens expire in {args.ttl_hours} h",
          flush=True)
    return 0


def flash_label_check(args: argparse.Namespace) -> None:
    """--label-dir needs the URL its QR codes open: refused before a board is touched."""
    if args.label_dir is not None:
        public_url(args)


def write_flash_label(args: argparse.Namespace, device_id: str, ward: str) -> str | None:
    """After a successful flash with --label-dir: the label's PNG; its line to print. Under
    `provision swap` the label names the asset (its --asset), and the QR code opens its page."""
    if args.label_dir is None:
        return None
    label = make_label(public_url(args), device_id, asset=str(getattr(args, "asset", None) or ""), ward=ward)
    path = save_png(label, args.label_dir / f"{device_id}.png")
    return f"label {path}: {label.line()}"


def do_flash_batch(args: argparse.Namespace, reporter: Reporter) -> int:
    """`provision flash --batch DIR`: each port takes the next unused entry of the batch (offline)."""
    given = [name for name in BATCH_DECIDES
             if getattr(args, name) not in (None, False, "") and not _from_env(name, getattr(args, name))]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ProvisionError(f"--batch takes the kind, site, ward, identity, broker, CA and token from the batch: "
                             f"drop {flags}")
    batch = BatchFolder.open(args.batch)
    template = batch.template
    kind = str(template["kind"])
    if kind not in ESP32_KINDS and kind != "sim":
        raise ProvisionError(f"{batch.root}: kind {kind!r} is not one this tool flashes")
    image = batch.firmware()
    transport = board_transport(str(template["broker"]), batch.ca_file,
                                plaintext=bool(template.get("insecure_plaintext")))
    left = batch.remaining()
    if left < len(args.port):
        raise ProvisionError(f"the batch in {batch.root} has {left} unused entries for {len(args.port)} boards: "
                             "prepare another batch")
    ota_keys = None
    if args.ota_keys is not None:
        from provisioning.release import trust_list

        ota_keys = trust_list([args.ota_keys]).to_json().encode()
    # a factory-new board gets MicroPython first, from an image file (no fleet to fetch a URL from)
    blank = BlankBoards(manifest=args.micropython_manifest, image=args.micropython_image, image_dir=args.image_dir,
                        fleet_url=None, baud=args.rom_baud, http_timeout=args.http_timeout)
    failures: list[ProvisionError] = []
    for port in args.port:
        entry = batch.claim(port)  # on disk before the board is touched: never given twice
        request = FlashRequest(kind=kind, site=str(template.get("site") or ""), transport=transport,
                               name=args.name, ward=str(template.get("ward") or ""),
                               wifi_ssid=args.wifi_ssid or template.get("wifi_ssid"),
                               wifi_password=args.wifi_password or template.get("wifi_password"),
                               enrollment_token=entry.token, offline=True, fleet_url=str(template["enroll_url"]),
                               wait_s=args.wait, device_id=entry.device_id, ota_keys=ota_keys)
        flasher = Flasher(request, image, None, reporter,
                          open_board=functools.partial(SerialBoard, answer_timeout=args.answer_timeout),
                          blank=blank)
        try:
            result: FlashResult = flasher.flash(port)
        except ProvisionError as err:
            err.message = (f"{err.message}; batch entry {entry.name} ({entry.device_id}) is spent, the next "
                           f"flash takes the next one (its token, unused, expires: or ask ops to revoke it)")
            batch.record(entry, "failed: " + err.message)
            if len(args.port) == 1:
                raise
            print(f"provision: {err.message}", file=sys.stderr, flush=True)  # as flash's other failures
            failures.append(err)
            continue
        batch.record(entry, result.line())
        print(result.line(), flush=True)
        label = batch.label(entry)
        print(f"label {entry.name} of the sheet: {label.line()}", flush=True)
        if args.label_dir is not None:
            save_png(label, args.label_dir / f"{entry.device_id}.png")
    if failures:
        raise BatchFailed(f"{len(failures)} of {len(args.port)} boards failed (see above); "
                          f"{batch.remaining()} entries left in the batch")
    return 0


def _from_env(name: str, value: object) -> bool:
    """A value that came from an environment default, not from the command line."""
    env = {"enrollment_token": "PROVISION_ENROLLMENT_TOKEN", "ca_file": "PROVISION_BROKER_CA_FILE"}.get(name)
    return env is not None and os.environ.get(env) is not None and str(value) == os.environ.get(env)


def add_arguments(parsers: dict[str, argparse.ArgumentParser]) -> None:
    """The options of `label`, `labels`, `batch`, and flash's and pi-bundle's label options."""
    for name in ("label", "labels", "batch", "flash", "pi-bundle"):
        parsers[name].add_argument("--public-url", default=os.environ.get("PROVISION_PUBLIC_URL"), metavar="URL",
                                   help="the fleet's address people open, for the labels' QR codes "
                                        "(env PROVISION_PUBLIC_URL; default: --fleet)")
    label = parsers["label"]
    label.add_argument("--device", required=True, metavar="ID")
    label.add_argument("--asset", default="", help="the asset (pole, cabinet) it is fitted to: the QR code opens "
                                                   "its page (else the device's)")
    label.add_argument("--ward", default="")
    label.add_argument("--date", metavar="YYYY-MM-DD", help="default: today")
    label.add_argument("--out", type=Path, metavar="FILE.png", help="default: ID.png here")
    labels = parsers["labels"]
    labels.add_argument("--batch", type=Path, required=True, metavar="FILE.csv",
                        help="a CSV with the header device,asset,ward[,date]")
    labels.add_argument("--out", type=Path, required=True, metavar="SHEET.pdf", help="the A4 PDF sheet")
    labels.add_argument("--png-dir", type=Path, metavar="DIR", help="also one PNG per label here")
    batch = parsers["batch"]
    batch.add_argument("batch_command", choices=["prepare"], metavar="prepare")
    batch.add_argument("--count", type=int, required=True, help="how many boards (1..500)")
    batch.add_argument("--kind", required=True, choices=[*ESP32_KINDS, "sim"])
    batch.add_argument("--ward", required=True)
    batch.add_argument("--site", help="part of the new device ids and the tokens' site (default: the ward)")
    batch.add_argument("--broker", required=True, metavar="URL", help="mqtts://HOST:PORT the boards connect to")
    batch.add_argument("--ca-file", type=Path, default=os.environ.get("PROVISION_BROKER_CA_FILE"), metavar="FILE",
                       help="PEM: the CA the boards check the broker and the fleet against (written with the batch)")
    batch.add_argument("--insecure-plaintext", action="store_true", help="no TLS (a lab network only)")
    batch.add_argument("--enroll-url", metavar="URL",
                       help="the fleet's URL as the boards reach it to enrol (default: --fleet)")
    batch.add_argument("--ttl-hours", type=int, default=72, help="how long the tokens work (1..720, default 72)")
    batch.add_argument("--wifi-ssid", default=os.environ.get("PROVISION_WIFI_SSID"))
    batch.add_argument("--wifi-password", default=os.environ.get("PROVISION_WIFI_PASSWORD"))
    batch.add_argument("--firmware", type=Path, help="firmware folder (default: the bundled firmware/)")
    batch.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    flash = parsers["flash"]
    flash.add_argument("--batch", type=Path, metavar="DIR",
                       help="flash from a batch folder (provision batch prepare), offline: each board takes "
                            "the next unused entry")
    flash.add_argument("--label-dir", type=Path, metavar="DIR", help="write each flashed board's label (PNG) here")
    parsers["pi-bundle"].add_argument("--label-dir", type=Path, metavar="DIR", help="write the Pi's label (PNG) here")
