"""`fleet serve` runs the service; `fleet user-add` adds a person to its database; `fleet db upgrade`
and `fleet db status` migrate the database's schema and tell where it stands."""

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from fleet import __version__

if TYPE_CHECKING:
    from fleet.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fleet.app import create_app
    from fleet.settings import Settings

    settings = Settings()
    if args.port is not None:
        settings.http_port = args.port
    if args.host is not None:
        settings.http_host = args.host
    # the schema first, as `fleet db upgrade` (one line and exit 1 when it cannot be done); the
    # lifespan's database() then finds nothing pending
    if (code := _db_upgrade(argparse.Namespace(), settings)) != 0:
        return code
    app = create_app(settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level=args.log_level.lower())
    return 0


def _database_shown(settings: "Settings") -> str:
    """Which database a command uses, as a person can find it: the SQLite file's absolute path,
    or the server URL without its password."""
    from pathlib import Path
    from urllib.parse import urlsplit, urlunsplit

    path = settings.sqlite_path()
    if path is not None:
        return f"sqlite://{path if str(path) == ':memory:' else Path(path).resolve()}"
    parts = urlsplit(settings.database_url)
    if parts.password is None:
        return settings.database_url
    host = f"{parts.username}@{parts.hostname}" if parts.username else str(parts.hostname)
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _db_upgrade(args: argparse.Namespace, settings: "Settings | None" = None) -> int:
    import asyncio

    from tortoise import Tortoise

    from fleet.db import database, upgrade_schema
    from fleet.migrations import MigrationError, applied
    from fleet.settings import Settings

    settings = settings or Settings()
    where = _database_shown(settings)

    async def upgrade() -> tuple[list[str], list[str] | None]:
        async with database(settings, migrate=False):
            done = await upgrade_schema(settings)
            return done, await applied(Tortoise.get_connection("default"))

    try:
        done, now = asyncio.run(upgrade())
    except MigrationError as err:
        print(f"fleet: database {where}: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        print(f"fleet: could not migrate the database {where}: {err}", file=sys.stderr)
        return 1
    at = now[-1] if now else "nothing"
    if done:
        print(f"fleet: database {where}: applied {len(done)} migration(s), {', '.join(done)}; now at {at}")
    else:
        print(f"fleet: database {where}: up to date, at {at}")
    return 0


def _db_status(args: argparse.Namespace) -> int:
    import asyncio

    from tortoise import Tortoise

    from fleet.db import database
    from fleet.migrations import Status, status
    from fleet.settings import Settings

    settings = Settings()
    where = _database_shown(settings)

    async def ask() -> Status:
        async with database(settings, migrate=False):
            return await status(Tortoise.get_connection("default"))

    try:
        now = asyncio.run(ask())
    except Exception as err:
        print(f"fleet: could not read the database {where}: {err}", file=sys.stderr)
        return 1
    print(f"database {where}")
    if now.applied is None:
        print("applied: none (no migration table: empty, or made by a release before migrations)")
    for name in now.applied or []:
        print(f"applied: {name}")
    for name in now.pending:
        print(f"pending: {name}")
    for name in now.unknown:
        print(f"unknown: {name} (a newer release migrated this database: this one refuses to run on it)")
    return 1 if now.unknown else 0


def _user_add(args: argparse.Namespace) -> int:
    import asyncio
    import getpass

    from fleet.auth.people import PasswordPolicyError, create_user
    from fleet.auth.roles import Role
    from fleet.db import database
    from fleet.settings import Settings

    settings = Settings()
    where = _database_shown(settings)  # FLEET_DATABASE_URL: the fleet you mean (the demo, ioc-demo, has its own)
    path = settings.sqlite_path()
    new_file = path is not None and str(path) != ":memory:" and not path.exists()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.username} (database {where}): ")
        if getpass.getpass("again: ") != password:
            print("fleet: the passwords differ", file=sys.stderr)
            return 2

    async def add() -> None:
        async with database(settings):
            await create_user(args.username, password, Role(args.role), args.full_name)

    try:
        asyncio.run(add())
    except PasswordPolicyError as err:
        print(f"fleet: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        print(f"fleet: could not add {args.username} to {where}: {err}", file=sys.stderr)
        return 1
    created = " (a new, empty database: set FLEET_DATABASE_URL for another one)" if new_file else ""
    print(f"fleet: user {args.username} ({args.role}) added to {where}{created}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet", description="The IOC fleet service.")
    parser.add_argument("--version", action="version", version=f"fleet {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API, the status page and the MQTT ingest")
    serve.add_argument("--host", help="HTTP address (default FLEET_HTTP_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default FLEET_HTTP_PORT or 8000)")
    serve.set_defaults(handler=_serve)
    user = commands.add_parser("user-add", help="add a person (the first admin, for instance) to the database "
                                                "of FLEET_DATABASE_URL (default sqlite://var/fleet.sqlite3)")
    user.add_argument("username")
    user.add_argument("--role", required=True,
                      choices=["admin", "ops", "ioc_operator", "technician", "read_only"])
    user.add_argument("--full-name", default="")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    user.set_defaults(handler=_user_add)
    db = commands.add_parser("db", help="the database schema of FLEET_DATABASE_URL (docs/fleet.md, "
                                        "\"Database schema and migrations\")")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply the pending migrations (fleet serve does it at start)"
                           ).set_defaults(handler=_db_upgrade)
    db_commands.add_parser("status", help="the migrations applied and pending; exit 1 when the database "
                                          "is newer than this release").set_defaults(handler=_db_status)
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
