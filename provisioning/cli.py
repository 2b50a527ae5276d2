"""`provision`: the field technician's tool. Flashing and registration arrive with the identity issue."""

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provision",
        description="Flash, register and verify field devices (ESP32 boards, Raspberry Pi bundles).",
        epilog="Commands (ports, flash, pi-bundle) arrive with the device-identity issue; "
               "today this prints its help.",
    )
    parser.add_argument("--version", action="version", version="provision 0.1.0")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
