"""MQTT ingest: from the broker to the database, checking every message against the contract."""
