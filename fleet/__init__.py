"""Fleet service: device registry, MQTT ingest, API and dashboard."""
