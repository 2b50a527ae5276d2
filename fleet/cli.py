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


def _user_add(args: argparse.Namespace) -> int:
    import asyncio
    import getpass

    from fleet.auth.people import PasswordPolicyError, create_user
    from fleet.auth.roles import Role
    from fleet.db import database
    from fleet.settings import Settings

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("again: ") != password:
            print("fleet: the passwords differ", file=sys.stderr)
            return 2

    async def add() -> None:
        async with database(Settings()):
            await create_user(args.username, password, Role(args.role), args.full_name)

    try:
        asyncio.run(add())
    except PasswordPolicyError as err:
        print(f"fleet: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        print(f"fleet: could not add {args.username}: {err}", file=sys.stderr)
        return 1
    print(f"fleet: user {args.username} ({args.role}) added")
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
    user = commands.add_parser("user-add", help="add a person (the first admin, for instance)")
    user.add_argument("username")
    user.add_argument("--role", required=True,
                      choices=["admin", "ops", "ioc_operator", "technician", "read_only"])
    user.add_argument("--full-name", default="")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    user.set_defaults(handler=_user_add)
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
