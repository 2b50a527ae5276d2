"""Light-weight simulated device updaters for rollout tests and the rollout benchmark.

A `Herd` is one asyncio MQTT connection (aiomqtt) that speaks for many device ids on an open
broker: each `SimDevice` sends a birth and health, and answers offers on its `ota/offer` with
`ota/progress` reports the way docs/ota.md's installers do, according to how the offered release
behaves on it (`Behaviour`). Nothing here verifies signatures: that is the installers' part.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from fleet.tasks import stop_tasks

OFFER_FILTER = "ioc/v1/d/+/ota/offer"


@dataclass(frozen=True)
class Behaviour:
    """What installing a release does on a device.

    - `outcome`: `confirmed`, `rolled_back` (the trial crashed: the old version reports it) or
      `failed` (refused or could not install: `reason`);
    - `boots`: boots the update costs before the device runs again (1 for a healthy one; a crash
      loop adds more);
    - `loop_factor`: what the new version does to the device's loop time.
    """

    outcome: str = "confirmed"
    reason: str | None = None
    boots: int = 1
    loop_factor: float = 1.0


GOOD = Behaviour()


@dataclass
class SimDevice:
    device_id: str
    kind: str = "esp32"
    roles: list[str] = field(default_factory=lambda: ["light"])
    fw: str = "0.1.0"
    loop_ms: float = 20.0
    heap_free: int = 40_000
    boot_n: int = 1
    period_s: int = 1  # the health period its birth declares (the fleet judges silence by it)
    ses: int = 1
    seq: int = 0
    previous: tuple[str, float] | None = None  # (fw, loop_ms) kept beside the running version
    offers: list[dict[str, Any]] = field(default_factory=list)  # every non-empty offer, in arrival order
    cleared: int = 0  # empty retained offers seen (the fleet clearing one)
    answered: dict[str, str] = field(default_factory=dict)  # offer id -> last status


class Herd:
    """Many simulated devices on one connection. `behaviours` maps a release name to what it does
    (GOOD for any other); a device id may have its own in `per_device`."""

    def __init__(self, client: aiomqtt.Client, devices: Iterable[SimDevice], *, health_s: float = 0.2,
                 step_s: float = 0.01) -> None:
        self.client = client
        self.devices = {d.device_id: d for d in devices}
        self.behaviours: dict[str, Behaviour] = {}
        self.per_device: dict[tuple[str, str], Behaviour] = {}
        self.health_s = health_s
        self.step_s = step_s
        self.offers_seen = 0
        self.first_offer_at: float | None = None
        self.last_offer_at: float | None = None
        self.first_offer_wall: float | None = None  # time.time() of the first and last offer
        self.last_offer_wall: float | None = None
        self.first_bad_report_at: float | None = None
        self.first_bad_report_wall: float | None = None  # time.time(), to set against the fleet's clock
        self.healthy = True  # send health
        self.go = asyncio.Event()  # cleared: offers are held (received, not answered) until it is set
        self.go.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []  # what broke a device's answer (a test or benchmark shows them)

    def topic(self, device: SimDevice, suffix: str) -> str:
        return f"ioc/v1/d/{device.device_id}/{suffix}"

    async def send(self, device: SimDevice, suffix: str, **fields: Any) -> None:
        body = {"v": 1, "ses": device.ses, "seq": device.seq, "ts": None, **fields}
        device.seq += 1
        await self.client.publish(self.topic(device, suffix), json.dumps(body), qos=1)

    async def birth(self, device: SimDevice) -> None:
        # a clock set (NTP): no set_time answer from the fleet
        body = {"v": 1, "ses": device.ses, "ts": int(time.time() * 1000), "kind": device.kind, "fw": device.fw,
                "roles": device.roles, "boot": {"n": device.boot_n, "reason": "start"}, "period_s": device.period_s,
                "next_seq": 0}
        await self.client.publish(self.topic(device, "birth"), json.dumps(body), qos=1, retain=True)

    async def health(self, device: SimDevice) -> None:
        await self.send(device, "health", up_s=10, fw=device.fw, heap_free=device.heap_free,
                        loop_ms=round(device.loop_ms), dropped=0)

    async def reboot(self, device: SimDevice, boots: int) -> None:
        """A restart: `boots` boots later, a new connection (session) and its birth."""
        device.boot_n += boots
        device.ses += 1
        device.seq = 0
        await self.birth(device)

    async def progress(self, device: SimDevice, offer: dict[str, Any], status: str, **extra: Any) -> None:
        device.answered[str(offer.get("id"))] = status
        if status in ("failed", "rolled_back") and self.first_bad_report_at is None:
            self.first_bad_report_at = time.monotonic()
            self.first_bad_report_wall = time.time()
        await self.send(device, "ota/progress", release=offer["release"], status=status, **extra)

    async def handle(self, device: SimDevice, offer: dict[str, Any]) -> None:
        offer_id = str(offer.get("id"))
        if offer_id in device.answered:  # a redelivery: the last status again
            await self.progress(device, offer, device.answered[offer_id])
            return
        release = str(offer["release"])
        await self.go.wait()
        await self.progress(device, offer, "received")
        if offer.get("action") == "rollback":
            if device.previous is None:
                await self.progress(device, offer, "failed", detail={"reason": "no_previous", "msg": "none kept"})
                return
            await self.progress(device, offer, "rebooting")
            device.fw, device.loop_ms = device.previous
            device.previous = None
            await self.reboot(device, 1)
            await self.progress(device, offer, "rolled_back", detail={"reason": "command", "msg": "rolled back"})
            return
        behaviour = self.per_device.get((device.device_id, release), self.behaviours.get(release, GOOD))
        for status, extra in (("downloading", {"pct": 50}), ("downloading", {"pct": 100}), ("verifying", {}),
                              ("installing", {})):
            await asyncio.sleep(self.step_s)
            await self.progress(device, offer, status, **extra)
        if behaviour.outcome == "failed":
            await self.progress(device, offer, "failed", detail={"reason": behaviour.reason or "install",
                                                                 "msg": "simulated"})
            return
        await self.progress(device, offer, "rebooting")
        await asyncio.sleep(self.step_s)
        await self.reboot(device, behaviour.boots)
        if behaviour.outcome == "rolled_back":
            await self.progress(device, offer, "rolled_back", detail={"reason": behaviour.reason or "crash",
                                                                      "msg": "the trial boots failed"})
            return
        device.previous = (device.fw, device.loop_ms)
        device.fw = release.rsplit("-", 1)[-1]
        device.loop_ms *= behaviour.loop_factor
        await self.progress(device, offer, "confirmed")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: "asyncio.Task[None]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(repr(task.exception()))

    async def listen(self) -> None:
        async for message in self.client.messages:
            device_id = str(message.topic).split("/")[3]
            device = self.devices.get(device_id)
            if device is None:
                continue
            payload = message.payload
            if not payload:
                device.cleared += 1
                continue
            assert isinstance(payload, bytes | bytearray)
            offer = json.loads(payload)
            device.offers.append(offer)
            self.offers_seen += 1
            now = time.monotonic()
            self.first_offer_at = self.first_offer_at or now
            self.last_offer_at = now
            self.last_offer_wall = time.time()
            self.first_offer_wall = self.first_offer_wall or self.last_offer_wall
            self._spawn(self.handle(device, offer))

    async def beat(self) -> None:
        while True:
            if self.healthy:
                for device in self.devices.values():
                    await self.health(device)
            await asyncio.sleep(self.health_s)


SUBSCRIBE_CHUNK = 100


@asynccontextmanager
async def herd(port: int, devices: Iterable[SimDevice], *, own_topics: bool = False,
               **options: Any) -> AsyncIterator[Herd]:
    """Connect, send every device's birth, subscribe to their offers, send health until the end.
    `own_topics`: subscribe to each device's offer topic rather than to every device's (several
    herds on one broker then each get only their own offers)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"herd-{uuid.uuid4().hex[:8]}",
                              max_queued_incoming_messages=0, max_inflight_messages=200) as client:
        client.pending_calls_threshold = 10_000  # many devices publish at once: not worth a warning
        flock = Herd(client, devices, **options)
        for device in flock.devices.values():
            await flock.birth(device)
        if own_topics:
            topics = [(flock.topic(d, "ota/offer"), 1) for d in flock.devices.values()]
            for start in range(0, len(topics), SUBSCRIBE_CHUNK):
                await client.subscribe(topics[start:start + SUBSCRIBE_CHUNK])
        else:
            await client.subscribe(OFFER_FILTER, qos=1)
        listening = asyncio.create_task(flock.listen(), name="herd-listen")
        beating = asyncio.create_task(flock.beat(), name="herd-health")
        try:
            yield flock
        finally:
            # aiomqtt's publish can lose a cancellation (fleet/tasks.py): cancelled until they stop
            left = await stop_tasks((listening, beating, *flock._tasks))
            assert not left, f"the herd's tasks did not stop: {left}"
