"""`edge-agent --config FILE`: run the agent until SIGINT or SIGTERM.

Exit status: 0 after a clean stop; 2 for a configuration mistake; 1 when the state folder cannot
be used; 75 when the fleet asked for a restart (`reboot`), for the service manager to act on.
"""

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import edge
from edge.agent import run_agent
from edge.config import AgentConfig, load_config
from edge.errors import ConfigError, EdgeError

PROG = "edge-agent"
EXIT_CONFIG = 2
EXIT_FAILURE = 1

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="The IOC edge agent for a Raspberry Pi.")
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe messages written to stderr (default: info)",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {edge.__version__}")
    return parser


def loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's handler for errors no task awaited.

    aiomqtt asks the loop, from paho's thread, to watch paho's socket (`call_soon_threadsafe(
    loop.add_writer, sock.fileno(), ...)`); when the broker goes away the socket can be closed
    before the loop runs that call, which then fails on a bad descriptor. The link notices the
    lost connection by itself and reconnects, so this is one warning line, not a traceback.
    Anything else keeps asyncio's default report."""
    error = context.get("exception")
    handle = repr(context.get("handle", ""))
    if isinstance(error, ValueError | OSError) and (".add_writer(" in handle or ".add_reader(" in handle):
        log.warning("the MQTT socket closed before the event loop could watch it (%s); the link reconnects", error)
        return
    loop.default_exception_handler(context)


async def _serve(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(loop_exception)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run_agent(config, stop=stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        return asyncio.run(_serve(config))
    except ConfigError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except EdgeError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
