"""`fleet serve` runs the service; `fleet demo` runs it with simulated devices."""

import argparse
import logging
import sys

from pydantic import ValidationError

from fleet import __version__


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fleet.app import create_app
    from fleet.settings import Settings

    settings = Settings()
    if args.port is not None:
        settings.http_port = args.port
    if args.host is not None:
        settings.http_host = args.host
    app = create_app(settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level=args.log_level.lower())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fleet.demo import run_demo

    return run_demo(pis=args.pis, boards=args.boards, port=args.port, workdir=args.workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet", description="The IOC fleet service.")
    parser.add_argument("--version", action="version", version=f"fleet {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API, the status page and the MQTT ingest")
    serve.add_argument("--host", help="HTTP address (default FLEET_HTTP_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default FLEET_HTTP_PORT or 8000)")
    serve.set_defaults(handler=_serve)
    demo = commands.add_parser("demo", help="the fleet, an embedded broker and simulated devices, at once")
    demo.add_argument("--pis", type=int, default=3, help="simulated Raspberry Pi agents (sim role)")
    demo.add_argument("--boards", type=int, default=1, help="MicroPython firmware processes")
    demo.add_argument("--port", type=int, default=8000, help="HTTP port of the status page")
    demo.add_argument("--workdir", default="var/demo", help="folder for the demo's databases and boards")
    demo.set_defaults(handler=_demo)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("amqtt", "transitions", "httpx"):  # every connection and state change at INFO
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return int(args.handler(args))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        print(f"fleet: bad configuration: {problems}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
