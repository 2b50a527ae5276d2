"""The IOC operator's part of the demo, played through the fleet's own API (as a person or a
script with a token would): give the loudspeakers the announcement clip the fleet serves, then
broadcast it now and then."""

import asyncio
import logging
import time
from typing import Any

import httpx

from demo.clips import Clip

log = logging.getLogger(__name__)

POLL_S = 1.0
COMMAND_TTL_S = 60  # a command the device has not run by then is not run
RETRY_S = 30.0  # a clip fetch that failed is asked for again after this


class ApiFailed(Exception):
    pass


def _json(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise ApiFailed(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                        f"{response.text[:200]}")
    return response.json()


async def wait_online(http: httpx.AsyncClient, device_id: str) -> None:
    """Until the fleet's verdict on the device is online (its birth: subscribed, ready for commands)."""
    while True:
        try:
            if (_json(await http.get(f"/api/devices/{device_id}")))["state"] == "online":
                return
        except (httpx.HTTPError, ApiFailed) as err:
            log.debug("%s: %s", device_id, err)
        await asyncio.sleep(POLL_S)


async def command(http: httpx.AsyncClient, device_id: str, name: str, args: dict[str, Any], *,
                  wait: bool = True) -> dict[str, Any]:
    """Send a command; with `wait`, poll its record until the device answered or it expired."""
    sent = _json(await http.post(f"/api/devices/{device_id}/commands",
                                       json={"name": name, "args": args, "ttl_s": COMMAND_TTL_S}))
    deadline = time.monotonic() + COMMAND_TTL_S + 5
    while wait and sent["status"] == "sent" and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S / 2)
        sent = _json(await http.get(f"/api/devices/{device_id}/commands/{sent['id']}"))
    return dict(sent)


async def announce(http: httpx.AsyncClient, device_id: str, clip: Clip, clip_url: str, every_s: float) -> None:
    """Once the speaker is online: have it fetch the clip, then broadcast it every `every_s`."""
    await wait_online(http, device_id)
    while True:
        try:
            fetched = await command(http, device_id, "speaker.clip_fetch", clip.fetch_args(clip_url))
        except (httpx.HTTPError, ApiFailed) as err:
            fetched = {"status": "error", "detail": str(err)}
        if fetched["status"] == "ok":
            break
        log.warning("%s did not fetch the clip (%s: %s); asking again in %.0f s", device_id,
                    fetched["status"], fetched.get("detail"), RETRY_S)
        await asyncio.sleep(RETRY_S)
    n = 0
    while True:
        n += 1
        try:
            await command(http, device_id, "speaker.broadcast",
                          {"id": f"news-{n}", "clip": clip.name}, wait=False)
        except (httpx.HTTPError, ApiFailed) as err:
            log.warning("%s: broadcast not sent: %s", device_id, err)
        await asyncio.sleep(every_s)
