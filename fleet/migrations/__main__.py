"""`python -m fleet.migrations NAME`: the next migration, for SQLite and PostgreSQL, from what the
models changed since the last one (aerich compares them with the model state the last file carries;
no database is needed). Read both files before committing them: aerich asks when it cannot tell a
rename from a drop and an add, and writes SQL a person may want to reorder or complete (data moves).
"""

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

from aerich import Command
from tortoise import Tortoise

from fleet.db import tortoise_config
from fleet.migrations import APP, DIALECTS, location, migrations
from fleet.settings import Settings

HEADER = ("# ruff: noqa: E501, RUF100\n"
          "# Made by aerich (python -m fleet.migrations); docs/fleet.md \"Database schema and migrations\".\n")
# a URL per dialect only to tell aerich which SQL to write: offline, nothing connects to it
OFFLINE_URL = {"sqlite": "sqlite://:memory:", "postgres": "postgres://offline@127.0.0.1:1/offline"}


def tidy(path: Path) -> None:
    """aerich puts the SQL into plain string literals, where Python reads its backslashes as escapes:
    the `\\n` of a PostgreSQL column comment became a newline (not what `generate_schemas` writes),
    a `\\/` an invalid escape. Raw literals keep the SQL exactly as Tortoise generated it."""
    text = path.read_text(encoding="utf-8").replace('    return """', '    return r"""')
    path.write_text(text if text.startswith(HEADER) else HEADER + text, encoding="utf-8")


async def _make(dialect: str, name: str, interactive: bool) -> str | None:
    config = tortoise_config(Settings(database_url=OFFLINE_URL[dialect]))
    await Tortoise.init(config=config, init_connections=False)
    try:
        command = Command(config, app=APP, location=str(location(dialect)))
        await command.init(offline=True)
        return await command.migrate(name, no_input=not interactive, offline=True)
    finally:
        await Tortoise.close_connections()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.migrations", description=__doc__)
    parser.add_argument("name", help="what changes, e.g. lease (letters, digits, _)")
    parser.add_argument("--dialect", choices=DIALECTS, help="one series only (each runs in its own process)")
    parser.add_argument("--no-input", action="store_true", help="take aerich's default answers")
    args = parser.parse_args(argv)
    if args.dialect is None:  # aerich keeps its state in class attributes: one dialect per process
        before = {dialect: migrations(dialect) for dialect in DIALECTS}
        for dialect in DIALECTS:
            cmd = [sys.executable, "-m", "fleet.migrations", args.name, "--dialect", dialect]
            if subprocess.run(cmd + (["--no-input"] if args.no_input else []), check=False).returncode:
                return 1
        made = {dialect: [m for m in migrations(dialect) if m not in before[dialect]] for dialect in DIALECTS}
        if made["sqlite"] and made["postgres"] and made["sqlite"] != made["postgres"]:
            # the same name in both series (the timestamp may differ by a second)
            target = location("sqlite") / APP / made["sqlite"][0]
            (location("postgres") / APP / made["postgres"][0]).rename(location("postgres") / APP / target.name)
        return 0
    version = asyncio.run(_make(args.dialect, args.name, not args.no_input))
    if not version:
        print(f"{args.dialect}: no model changed since {migrations(args.dialect)[-1]}")
        return 0
    tidy(location(args.dialect) / APP / version)
    print(f"{args.dialect}: {location(args.dialect) / APP / version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
