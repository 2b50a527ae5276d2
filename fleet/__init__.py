"""Fleet service: device registry, MQTT ingest, API and dashboard."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ioc-fleet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
