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

import edge
from edge.agent import run_agent
from edge.config import AgentConfig, load_config
from edge.errors import ConfigError, EdgeError

PROG = "edge-agent"
EXIT_CONFIG = 2
EXIT_FAILURE = 1


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


async def _serve(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
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
