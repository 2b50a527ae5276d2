"""The IOC operator's part of the demo, played through the fleet's own API (as a person or a
script with a token would): put the demo's chime into the audio library, then schedule a one-off
broadcast of it to the loudspeakers now and then.

The rest is the fleet's (docs/broadcasts.md, "Delivery", "Clips before their first occurrence",
"Receipts"): each broadcast goes into the speakers' desired state, the fleet sends each speaker a
`speaker.clip_fetch` with a tokenised URL on FLEET_PUBLIC_URL (the demo sets it to its own plain
http address: the ESP32 downloads http:// only), the nodes play it at its start, and their playback
events become the receipts that `GET /api/broadcasts/{id}/summary` counts.
"""

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from demo.clips import Clip

log = logging.getLogger(__name__)

POLL_S = 1.0
LEAD_S = 30  # a broadcast starts this long after it is made: delivery (at most 10 s apart per
#              speaker, edits coalesce), the node's apply and the first clip fetch happen meanwhile
RETRY_S = 30.0  # an upload or a broadcast the fleet refused for a passing reason is tried again after this
CLIP_TITLE = "Demo chime"
ALREADY = re.compile(r"already in the library as clip (\d+)")


class ApiFailed(Exception):
    pass


def _json(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise ApiFailed(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                        f"{response.text[:200]}")
    return response.json()


async def wait_online(http: httpx.AsyncClient, device_id: str) -> None:
    """Until the fleet's verdict on the device is online (its birth: it has its roles)."""
    while True:
        try:
            if (_json(await http.get(f"/api/devices/{device_id}")))["state"] == "online":
                return
        except (httpx.HTTPError, ApiFailed) as err:
            log.debug("%s: %s", device_id, err)
        await asyncio.sleep(POLL_S)


async def library_clip(http: httpx.AsyncClient, clip: Clip) -> int:
    """The chime's id in the audio library: uploaded, or, when the library already has the same
    audio (a demo started again in the same folder: 409), the clip it names."""
    with clip.path.open("rb") as wav:
        response = await http.post("/api/audio", data={"title": CLIP_TITLE},
                                   files={"file": (clip.path.name, wav, "audio/wav")})
    if response.status_code == 409:
        found = ALREADY.search(str(response.json().get("detail", "")))
        if found is None:  # the library is full: nothing the demo can mend
            raise ApiFailed(f"POST /api/audio: 409 {response.text[:200]}")
        clip_id = int(found.group(1))
        _json(await http.get(f"/api/audio/{clip_id}"))
        return clip_id
    return int(_json(response)["id"])


async def schedule(http: httpx.AsyncClient, clip_id: int, speakers: list[str]) -> int:
    """One broadcast of the clip to the speakers, LEAD_S from now (a normal one: an overlap with
    another is confirmed, the calendar resolves it by level, order and age); its id."""
    start = (datetime.now(UTC) + timedelta(seconds=LEAD_S)).replace(microsecond=0)
    body: dict[str, Any] = {"title": f"Demo chime at {start:%H:%M:%S} UTC", "clip_id": clip_id, "level": "normal",
                            "targets": {"devices": speakers}, "start": start.isoformat()}
    response = await http.post("/api/broadcasts", json=body)
    if response.status_code == 409 and "review" in response.json():
        response = await http.post("/api/broadcasts", json={**body, "confirm": True})
    return int(_json(response)["broadcast"]["id"])


async def announce(http: httpx.AsyncClient, speakers: list[str], clip: Clip, every_s: float) -> None:
    """Once the speakers are online: the chime into the library, then a broadcast every `every_s`."""
    for device_id in speakers:
        await wait_online(http, device_id)
    while True:
        try:
            clip_id = await library_clip(http, clip)
            break
        except (httpx.HTTPError, ApiFailed) as err:
            log.warning("the chime is not in the audio library (%s); trying again in %.0f s", err, RETRY_S)
            await asyncio.sleep(RETRY_S)
    log.info("demo: the chime is clip %d of the audio library; a broadcast to %s every %.0f s",
             clip_id, ", ".join(speakers), every_s)
    while True:
        try:
            broadcast_id = await schedule(http, clip_id, speakers)
            log.info("demo: broadcast %d scheduled %d s ahead (GET /api/broadcasts/%d/summary)",
                     broadcast_id, LEAD_S, broadcast_id)
        except (httpx.HTTPError, ApiFailed) as err:
            log.warning("demo: broadcast not scheduled: %s", err)
        await asyncio.sleep(every_s)
