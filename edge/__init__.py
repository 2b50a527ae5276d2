"""Raspberry Pi edge agent."""

from importlib.metadata import PackageNotFoundError, version


def _installed_version() -> str:
    try:
        return version("ioc-edge")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


__version__ = _installed_version()
