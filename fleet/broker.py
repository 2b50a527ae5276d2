"""The embedded MQTT broker (amqtt): only for the zero-setup demo, when FLEET_MQTT_URL is unset.

Production and the tests use Mosquitto. The embedded broker listens on loopback only.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from amqtt.broker import Broker

from fleet.broker_auth.embedded import EmbeddedAuthority

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not start (most often: its port is taken)."""


@asynccontextmanager
async def embedded_broker(host: str, port: int, authority: EmbeddedAuthority) -> AsyncIterator[str]:
    """Run an amqtt broker for the duration of the block; yields its mqtt:// URL (no password in it)."""
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 2000}},
        "plugins": {
            "fleet.broker_auth.embedded.FleetAuthPlugin": {"authority": authority},
            "fleet.broker_auth.embedded.FleetTopicPlugin": {"authority": authority},
        },
    }
    broker = Broker(config)
    try:
        await broker.start()
    except Exception as err:  # amqtt wraps the OSError of a taken port in its own errors
        raise BrokerError(f"the embedded MQTT broker cannot listen on {host}:{port} ({err}); "
                          "set FLEET_EMBEDDED_BROKER_PORT or FLEET_MQTT_URL") from err
    url = f"mqtt://{host}:{port}"
    log.info("embedded MQTT broker listening on %s", url)
    try:
        yield url
    finally:
        await broker.shutdown()
