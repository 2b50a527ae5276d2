"""`ioc-demo` (`make demo`): the fleet, an embedded broker and the city's devices, at once (demo/city.py)."""

import argparse
import logging
import os
import sys

from demo import KINDS

EXIT_INTERRUPTED = 130


def _kinds(text: str) -> frozenset[str]:
    chosen = frozenset(k.strip() for k in text.split(",") if k.strip()) - {"none"}
    unknown = chosen - set(KINDS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown kind(s) {', '.join(sorted(unknown))}; "
                                         f"choose from {','.join(KINDS)} or none")
    return chosen


def _seconds(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 86_400:
        raise argparse.ArgumentTypeError("between 1 and 86400 seconds")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ioc-demo", description=__doc__)
    parser.add_argument("--kinds", type=_kinds, default=frozenset(KINDS), metavar="KIND,...",
                        help=f"which of the city's devices to run (default all: {','.join(KINDS)}; 'none': none)")
    parser.add_argument("--pis", type=int, default=0, help="extra simulated Raspberry Pi agents (sim role)")
    parser.add_argument("--boards", type=int, default=0, help="extra simulated ESP32 boards (sim role, MicroPython)")
    parser.add_argument("--announce-every", type=_seconds, default=60.0, metavar="S",
                        help="seconds between the operator's broadcasts to each loudspeaker (default 60)")
    parser.add_argument("--hotspot-every", type=_seconds, default=3.0, metavar="S",
                        help="seconds between the hotspot's hostapd log lines (default 3)")
    parser.add_argument("--port", type=int, help="HTTP port of the status page (default FLEET_HTTP_PORT or 8000; "
                                                 "the broker's: FLEET_EMBEDDED_BROKER_PORT or 1884)")
    parser.add_argument("--workdir", default=os.environ.get("FLEET_DEMO_DIR", "var/demo"),
                        help="folder for the demo's database, devices and logs (default FLEET_DEMO_DIR or var/demo)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("amqtt", "transitions", "httpx"):  # every connection and state change at INFO
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        from demo.city import DemoOptions, run_demo
    except KeyboardInterrupt:  # Ctrl-C while the demo's modules load
        print("ioc-demo: interrupted during start-up; nothing had started", file=sys.stderr)
        return EXIT_INTERRUPTED
    options = DemoOptions(kinds=args.kinds, pis=args.pis, boards=args.boards,
                          announce_every_s=args.announce_every, hotspot_every_s=args.hotspot_every)
    try:
        return run_demo(options, port=args.port, workdir=args.workdir)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
