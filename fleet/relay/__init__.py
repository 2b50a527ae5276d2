"""Relaying device events to the IOC (docs/relay.md): snapshots, routes, the delivery outbox,
webhook and MQTT endpoints, the live feed and the city reports."""
