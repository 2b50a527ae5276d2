"""Fast unit tests of the pure cores (no broker, no database, no interpreter): the stream and
presence rules, the contract's parsers, the telemetry time rule, the one version. Run alone with
`.venv/bin/python -m pytest -q tests/unit` (seconds); the end-to-end tests beside them in tests/fleet,
tests/edge, tests/firmware check the same rules through the real things."""
