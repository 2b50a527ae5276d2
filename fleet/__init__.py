"""Fleet service: device registry, MQTT ingest, API and dashboard."""

__version__ = "0.1.0"
