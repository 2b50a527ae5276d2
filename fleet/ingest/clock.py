"""The fleet as a device's fallback clock.

A board that has no time yet (no NTP reachable: its birth carries `ts: null`) gets a `set_time`
command with the fleet's clock as soon as its birth arrives, so its schedules (light programs,
broadcasts) can run. The command is recorded like any other, so its result is visible.
"""

import logging
import time
import uuid
from collections.abc import Sequence

from contract import ContractError, Upstream, make_command
from fleet.ingest.link import LinkError, MqttLink
from fleet.models import Command

log = logging.getLogger(__name__)

SET_TIME_TTL_MS = 60_000  # a time more than a minute old is not worth setting


async def offer_time(link: MqttLink, checked: Sequence[Upstream]) -> int:
    """Send `set_time` to every device in the batch whose birth says its clock is unknown."""
    sent = 0
    for msg in checked:
        if msg.kind != "birth" or msg.ts is not None or msg.body.get("kind") != "esp32":
            continue
        now_ms = time.time_ns() // 1_000_000
        command_id = uuid.uuid4().hex
        try:
            topic, payload = make_command(msg.device_id, command_id, "set_time", {"unix_ms": now_ms},
                                          now_ms + SET_TIME_TTL_MS)
            await Command.create(id=command_id, device_id=msg.device_id, name="set_time",
                                 args={"unix_ms": now_ms}, expires_ms=now_ms + SET_TIME_TTL_MS)
            await link.publish(topic, payload)
            sent += 1
        except (ContractError, LinkError) as err:
            log.warning("could not send the time to %s: %s", msg.device_id, err)
        except Exception as err:  # the database, most often: the birth is stored, the ingest goes on
            log.error("could not send the time to %s (%s: %.200s)", msg.device_id, type(err).__name__, err)
    return sent
