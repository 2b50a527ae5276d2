"""`ioc-demo` (`make demo`): the fleet, an embedded broker and simulated devices, at once (demo/city.py)."""

import argparse
import logging
import os
import sys

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ioc-demo", description=__doc__)
    parser.add_argument("--pis", type=int, default=3, help="simulated Raspberry Pi agents (sim role)")
    parser.add_argument("--boards", type=int, default=1, help="MicroPython firmware processes")
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
        from demo.city import run_demo
    except KeyboardInterrupt:  # Ctrl-C while the demo's modules load
        print("ioc-demo: interrupted during start-up; nothing had started", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        return run_demo(pis=args.pis, boards=args.boards, port=args.port, workdir=args.workdir)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
