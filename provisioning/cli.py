"""`provision`: the field technician's tool. A table of commands, one handler each.

    provision ports                       serial ports; ESP32 USB bridges are marked
    provision flash --port P --kind K [--site S] [--new-identity | --device-id ID] [--port P2 ...]
    provision pi-bundle --out DIR --site S (--ca-file F | --system-ca | --insecure-plaintext)
                        [--target pi-arm64 | pi-armv7]
    provision release keygen | build | sign | verify | trust   signed OTA releases (provisioning/release_cli.py)
    provision label --device ID | labels --batch CSV | batch prepare ... | flash --batch DIR
                                          labels and the offline batch day (provisioning/batch_cli.py)
    provision swap --asset X (--port P | --device-id ID) [flash's options]   replace the device on a pole
    provision check --device ID [--lamp-test [--lamp-seconds N]] [--tone-test] [--wait S]   checks at the pole

Every failure reaches the user as one line, `provision: message`, with the exit status of
`provisioning.errors` (the table is in docs/provisioning.md).
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from provisioning import batch_cli
from provisioning.board import SerialBoard
from provisioning.broker_tls import TransportChoice
from provisioning.check import CheckRequest, lines, run_check, verdict
from provisioning.errors import BatchFailed, ProvisionError
from provisioning.flash import ALL_KINDS, BlankBoards, Flasher, FlashRequest, FlashResult, board_transport
from provisioning.fleet_api import FleetClient
from provisioning.identity import new_device_id
from provisioning.image import FirmwareImage
from provisioning.micropython_image import DEFAULT_MANIFEST
from provisioning.pibundle import PiBundleRequest, make_pi_bundle
from provisioning.ports import list_serial_ports
from provisioning.progress import Reporter
from provisioning.release import trust_list
from provisioning.release_cli import add_arguments as add_release_arguments
from provisioning.release_cli import do_release
from provisioning.swap import SWAP_OWN, do_swap_with
from provisioning.wheels import PI_TARGETS, WheelTarget

PROG = "provision"
try:
    VERSION = version("ioc-provisioning")  # VERSION, the repository's one version (docs/packaging.md)
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0+unknown"


def _fail(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _ota_keys(path: Path | None) -> str | None:
    """--ota-keys: ota_keys.json or PEM public keys, as the trust list a device reads (ota_keys.json)."""
    return None if path is None else trust_list([path]).to_json()


def _fleet(args: argparse.Namespace) -> FleetClient | None:
    if not args.fleet:
        return None
    return FleetClient(args.fleet, args.token, timeout=args.http_timeout)


# handlers ---------------------------------------------------------------------------------
def do_ports(args: argparse.Namespace, reporter: Reporter) -> int:
    ports = list_serial_ports(args.include)
    if not ports:
        print("no serial ports found (is the board plugged in? a charge-only cable?)")
        return 0
    for port in ports:
        mark = "ESP32?" if port.likely_esp32 else "      "
        what = port.bridge or port.description or "serial port"
        usb = f" [{port.usb_id}]" if port.usb_id else ""
        serial_no = f" s/n {port.serial_number}" if port.serial_number else ""
        print(f"{mark} {port.device}  {what}{usb}{serial_no}")
    return 0


def do_flash(args: argparse.Namespace, reporter: Reporter, results: list[FlashResult] | None = None) -> int:
    if args.batch is not None:  # its labels link to the batch's public URL
        return batch_cli.do_flash_batch(args, reporter)
    batch_cli.flash_label_check(args)
    if args.kind is None:
        raise ProvisionError("--kind is required (or --batch DIR, whose kind is the batch's)")
    try:
        image = FirmwareImage.from_dir(args.firmware) if args.firmware else FirmwareImage.build()
    except (OSError, ValueError) as err:
        raise ProvisionError(f"cannot read the firmware image: {err}") from err
    transport = board_transport(args.broker, args.ca_file, plaintext=args.insecure_plaintext)
    ota_keys = _ota_keys(args.ota_keys)
    if args.device_id and len(args.port) > 1:
        raise ProvisionError("--device-id names one board's identity: give one --port with it")
    request = FlashRequest(kind=args.kind, site=args.site, transport=transport, name=args.name,
                           ward=args.ward, wifi_ssid=args.wifi_ssid, wifi_password=args.wifi_password,
                           enrollment_token=args.enrollment_token, offline=args.offline,
                           fleet_url=args.fleet, wait_s=args.wait, new_identity=args.new_identity,
                           device_id=args.device_id, ota_keys=None if ota_keys is None else ota_keys.encode())
    fleet = None if args.offline else _fleet(args)
    failures: list[ProvisionError] = []
    try:
        blank = BlankBoards(manifest=args.micropython_manifest, image=args.micropython_image,
                            image_dir=args.image_dir, fleet_url=args.fleet, baud=args.rom_baud,
                            http_timeout=args.http_timeout)
        flasher = Flasher(request, image, fleet, reporter,
                          open_board=functools.partial(SerialBoard, answer_timeout=args.answer_timeout),
                          blank=blank)
        for port in args.port:
            try:
                result = flasher.flash(port)
                if results is not None:  # provision swap: the new board's id
                    results.append(result)
                print(result.line(), flush=True)
                label = batch_cli.write_flash_label(args, result.device_id, args.ward)
                if label:
                    print(label, flush=True)
            except ProvisionError as err:
                if len(args.port) == 1:
                    raise
                _fail(err.message)
                failures.append(err)
    finally:
        if fleet is not None:
            fleet.close()
    if not failures:
        return 0
    codes = {err.exit_code for err in failures}
    done = len(args.port) - len(failures)
    summary = f"{len(failures)} of {len(args.port)} boards failed ({done} done)"
    if len(codes) == 1:  # one reason: keep its exit status
        raise _same_code(failures[0], summary)
    raise BatchFailed(summary + ", for different reasons (see above)")


def _same_code(err: ProvisionError, message: str) -> ProvisionError:
    summary = ProvisionError(message)
    summary.exit_code = err.exit_code
    return summary


def do_pi_bundle(args: argparse.Namespace, reporter: Reporter) -> int:
    batch_cli.flash_label_check(args)
    transport = TransportChoice.from_options(broker=args.broker, ca_file=args.ca_file, system_ca=args.system_ca,
                                             plaintext=args.insecure_plaintext)
    if args.target and (args.platform or args.python_version):
        raise ProvisionError(f"--target {args.target} names the platform tags and the Python itself: "
                             "give either --target or --platform/--python-version")
    if args.target:
        wheels = WheelTarget.named(args.target, find_links=args.wheels_from)
    else:
        wheels = WheelTarget(platforms=tuple(args.platform), python_version=args.python_version,
                             find_links=args.wheels_from)
    request = PiBundleRequest(out_dir=args.out, site=args.site, transport=transport, name=args.name,
                              ward=args.ward, roles=tuple(args.role), enrollment_token=args.enrollment_token,
                              offline=args.offline, fleet_url=args.fleet, wheels=wheels,
                              ota_keys=_ota_keys(args.ota_keys))
    device_id = new_device_id("pi", args.site)
    fleet = None if args.offline else _fleet(args)
    try:
        out = make_pi_bundle(request, fleet, device_id)
    finally:
        if fleet is not None:
            fleet.close()
    how = "enrolls when install.sh runs" if args.offline else "registered"
    print(f"ok {device_id} ({how}): bundle in {out}; on the Pi run: sudo sh install.sh", flush=True)
    label = batch_cli.write_flash_label(args, device_id, args.ward)
    if label:
        print(label, flush=True)
    return 0


def do_check(args: argparse.Namespace, reporter: Reporter) -> int:
    fleet = _fleet(args)
    if fleet is None:
        raise ProvisionError("provision check asks the fleet: give --fleet URL (or PROVISION_FLEET_URL)")
    request = CheckRequest(device_id=args.device, lamp_test=args.lamp_test, lamp_seconds=args.lamp_seconds,
                           tone_test=args.tone_test, wait_s=args.wait)
    with fleet:
        check = run_check(fleet, request)
    for line in lines(check):
        print(line, flush=True)
    verdict(check)
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace, Reporter], int], str]] = {
    "ports": (do_ports, "list serial ports; ESP32 USB bridges are marked"),
    "flash": (do_flash, "flash, register and verify ESP32 boards"),
    "swap": (lambda args, reporter: do_swap_with(args, reporter, _fleet(args), do_flash),
             "swap the device on an asset (a pole) for a new board: flash it, move the program, retire the old"),
    "pi-bundle": (do_pi_bundle, "write what a Raspberry Pi needs to a folder (SD card, USB stick)"),
    "check": (do_check, "checks at the pole: online, RSSI, firmware, last health, lamp/tone/sensor"),
    "release": (do_release, "build, sign and verify OTA releases; make release keys and trust lists"),
    "label": (batch_cli.do_label, "a device's label (PNG): id, asset, ward, date, a QR code to its page"),
    "labels": (batch_cli.do_labels, "an A4 PDF sheet of labels from a CSV (device,asset,ward[,date])"),
    "batch": (batch_cli.do_batch, "batch prepare: tokens, firmware and labels for a day of offline flashing"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Flash, register and verify field devices (ESP32 boards, Raspberry Pi bundles).")
    parser.add_argument("--version", action="version", version=f"{PROG} {VERSION}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--fleet", default=os.environ.get("PROVISION_FLEET_URL"), metavar="URL",
                        help="fleet service URL (env PROVISION_FLEET_URL)")
    common.add_argument("--token", default=os.environ.get("PROVISION_API_TOKEN"),
                        help="your API token (env PROVISION_API_TOKEN)")
    common.add_argument("--http-timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", help="only the result lines and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parsers = {name: sub.add_parser(name, help=help_, description=help_, parents=[common])
               for name, (_, help_) in COMMANDS.items()}

    ports = parsers["ports"]
    ports.add_argument("--include", action="append", default=[], metavar="GLOB",
                       help="also list paths matching GLOB (pty links of virtual boards)")

    flash = parsers["flash"]
    flash.add_argument("--port", action="append", required=True,
                       help="serial port of a board; repeat for several boards")
    flash.add_argument("--kind", choices=ALL_KINDS,
                       help="what the node does (sim: a simulated sensor, for demos)")
    flash.add_argument("--site", help="where it is installed (part of a new id; needed when the board gets one)")
    identity = flash.add_mutually_exclusive_group()
    identity.add_argument("--new-identity", action="store_true",
                          help="give the board a new device id even if it has one (default: a board keeps "
                               "its id and its fleet record; the previous id's credentials are revoked)")
    identity.add_argument("--device-id", metavar="ID",
                          help="give the board this id (e.g. that of a board it replaces; its credentials "
                               "are renewed, the old ones revoked)")
    flash.add_argument("--name", default="", help="a human name for the device")
    flash.add_argument("--ward", default="", help="ward or commune")
    flash.add_argument("--wifi-ssid", default=os.environ.get("PROVISION_WIFI_SSID"))
    flash.add_argument("--wifi-password", default=os.environ.get("PROVISION_WIFI_PASSWORD"),
                       help="(env PROVISION_WIFI_PASSWORD)")
    flash.add_argument("--broker", metavar="URL",
                       help="broker the device uses: mqtts://HOST[:PORT] (or HOST[:PORT]); default: what "
                            "the fleet says")
    flash.add_argument("--ca-file", type=Path, default=os.environ.get("PROVISION_BROKER_CA_FILE"),
                       metavar="FILE",
                       help="PEM: the CA certificate(s) the board checks its broker and fleet against "
                            "(env PROVISION_BROKER_CA_FILE); written to the board as ca.der")
    flash.add_argument("--insecure-plaintext", action="store_true",
                       help="no TLS: the board sends its password (and enrollment token) readable on "
                            "the network; for a lab network only")
    flash.add_argument("--enrollment-token", default=os.environ.get("PROVISION_ENROLLMENT_TOKEN"),
                       help="register with an enrollment token instead of an API token")
    flash.add_argument("--offline", action="store_true",
                       help="no link to the fleet: write the enrollment token; the device enrolls itself")
    flash.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                       help="how long to wait for the device to come online (default 60)")
    flash.add_argument("--firmware", type=Path, help="firmware folder (default: the bundled firmware/)")
    flash.add_argument("--ota-keys", type=Path, default=os.environ.get("PROVISION_OTA_KEYS"), metavar="FILE",
                       help="the release keys the board trusts for OTA updates: ota_keys.json or PEM public "
                            "keys (env PROVISION_OTA_KEYS); written as ota_keys.json; without it a board "
                            "keeps the one it has")
    flash.add_argument("--answer-timeout", type=float, default=5.0, metavar="SECONDS",
                       help="how long a board may take to answer one request (default 5)")
    flash.add_argument("--micropython-manifest", type=Path, metavar="FILE",
                       default=os.environ.get("PROVISION_MICROPYTHON_MANIFEST", str(DEFAULT_MANIFEST)),
                       help="a blank board (no MicroPython) first gets a MicroPython image pinned in this "
                            "manifest (env PROVISION_MICROPYTHON_MANIFEST; default: the repository's "
                            "provisioning/micropython-images.toml)")
    flash.add_argument("--micropython-image", metavar="NAME",
                       help="the manifest's image to write on blank boards (default: its `default`)")
    flash.add_argument("--image-dir", type=Path, default=os.environ.get("PROVISION_IMAGE_DIR"), metavar="DIR",
                       help="where the manifest's image files are (env PROVISION_IMAGE_DIR; default: the "
                            "manifest's folder)")
    flash.add_argument("--rom-baud", type=int, default=460800, metavar="BAUD",
                       help="baud rate for writing MicroPython through the ROM bootloader (default 460800)")

    bundle = parsers["pi-bundle"]
    bundle.add_argument("--out", type=Path, required=True, help="an empty or new folder")
    bundle.add_argument("--site", required=True)
    bundle.add_argument("--name", default="")
    bundle.add_argument("--ward", default="")
    bundle.add_argument("--role", action="append", default=[], help="an agent role (e.g. sim); repeatable")
    bundle.add_argument("--broker", metavar="URL",
                        help="mqtts://HOST:PORT (or HOST:PORT) the Pi connects to (default: what the fleet says)")
    bundle.add_argument("--ca-file", type=Path, default=os.environ.get("PROVISION_BROKER_CA_FILE"), metavar="FILE",
                        help="the CA that signed the broker's certificate; shipped in the bundle "
                             "(env PROVISION_BROKER_CA_FILE)")
    bundle.add_argument("--system-ca", action="store_true",
                        help="check the broker's certificate with the Pi's system CAs (a public CA signed it)")
    bundle.add_argument("--insecure-plaintext", action="store_true",
                        help="no TLS: the password crosses the network in clear (lab networks only)")
    bundle.add_argument("--enrollment-token", default=os.environ.get("PROVISION_ENROLLMENT_TOKEN"))
    bundle.add_argument("--offline", action="store_true",
                        help="no link to the fleet now: the Pi enrolls itself when install.sh runs")
    bundle.add_argument("--target", metavar="PI",
                        help="the Pi the wheels are for: " + "; ".join(
                            f"{name} = {target.description}" for name, target in PI_TARGETS.items())
                        + " (default: this machine)")
    bundle.add_argument("--platform", action="append", default=[], metavar="TAG",
                        help="instead of --target: wheels for this pip platform tag, e.g. manylinux_2_36_aarch64; "
                             "repeatable, each tag taken literally")
    bundle.add_argument("--python-version", metavar="X.Y",
                        help="the Pi's Python, e.g. 3.11 on Raspberry Pi OS 12 (default: this one)")
    bundle.add_argument("--wheels-from", type=Path, metavar="DIR",
                        help="take every wheel from this folder, with no index (an offline laptop)")
    bundle.add_argument("--ota-keys", type=Path, default=os.environ.get("PROVISION_OTA_KEYS"), metavar="FILE",
                        help="the release keys the Pi trusts for OTA updates: ota_keys.json or PEM public keys "
                             "(env PROVISION_OTA_KEYS); shipped as ota_keys.json for /etc/ioc-edge/ota_keys.json")
    check = parsers["check"]
    check.add_argument("--device", required=True, metavar="ID", help="the device fitted at the pole")
    check.add_argument("--lamp-test", action="store_true", help="turn the lamp on (light role) and check its current")
    check.add_argument("--lamp-seconds", type=int, default=30, metavar="N", help="how long the lamp stays on (1..60)")
    check.add_argument("--tone-test", action="store_true", help="play the test tone (speaker role)")
    check.add_argument("--wait", type=float, default=45.0, metavar="SECONDS",
                       help="how long the tests' results may take (default 45)")
    add_release_arguments(parsers["release"])
    batch_cli.add_arguments(parsers)
    swap = parsers["swap"]
    swap.add_argument("--asset", required=True, metavar="ID", help="the asset (pole, cabinet, mast) to swap on")
    swap_board = swap.add_mutually_exclusive_group(required=True)
    swap_board.add_argument("--port", action="append", help="the new board's serial port: flashed as `provision "
                                                            "flash` does, with a new device id")
    swap_board.add_argument("--device-id", metavar="ID", help="the new device, flashed and registered already")
    # after every module added its flash options (labels, batch): swap copies them all
    for action in flash._actions:  # flash's board and broker options, for the new board (copies: flash keeps its own)
        if action.dest not in SWAP_OWN and not any(o in swap._option_string_actions for o in action.option_strings):
            swap._add_action(copy.copy(action))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler, _ = COMMANDS[args.command]
    reporter = Reporter(quiet=args.quiet)
    try:
        return handler(args, reporter)
    except ProvisionError as err:
        _fail(err.message)
        return err.exit_code
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to finish cleanly")
        return 130


if __name__ == "__main__":
    sys.exit(main())
