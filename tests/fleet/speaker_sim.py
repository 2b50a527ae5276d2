"""Test stand-ins for speaker nodes at the MQTT boundary: each sends a birth (kind, roles speaker),
receives its commands and answers them as the test's policy says: a clip_fetch by a real HTTP GET of
the URL with its length and SHA-256 checked (as the nodes do), or an error, or no answer at all."""

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import httpx

from fleet.models import Device
from fleet.tasks import stop_tasks
from tests.support.wait import async_wait_for

# (device id, command name, args) → (status, detail), or None: no answer
Policy = Callable[[str, str, dict[str, Any]], tuple[str, Any] | None]
DOWNLOAD = ("download", None)  # a policy's answer: do the real download, then answer as a node would


def downloads(device_id: str, name: str, args: dict[str, Any]) -> tuple[str, Any] | None:
    """The default: clip fetches are downloaded, every other command is answered ok."""
    return DOWNLOAD if name == "speaker.clip_fetch" else ("ok", None)


@dataclass
class Node:
    device_id: str
    kind: str
    ses: int = 1
    seq: int = 0
    commands: list[dict[str, Any]] = field(default_factory=list)  # every command, in arrival order
    downloaded: list[tuple[str, int]] = field(default_factory=list)  # (sha256, bytes) fetched and checked


class Speakers:
    def __init__(self, client: aiomqtt.Client, nodes: list[Node], policy: Policy) -> None:
        self.client = client
        self.nodes = {n.device_id: n for n in nodes}
        self.policy = policy
        self.errors: list[str] = []

    def named(self, device_id: str) -> Node:
        return self.nodes[device_id]

    def commands(self, device_id: str, name: str) -> list[dict[str, Any]]:
        return [c for c in self.nodes[device_id].commands if c["name"] == name]

    async def birth(self, node: Node) -> None:
        body = {"v": 1, "ses": node.ses, "ts": int(time.time() * 1000), "kind": node.kind, "fw": "0.1.0",
                "roles": ["speaker"], "boot": {"n": node.ses, "reason": "start"}, "period_s": 60, "next_seq": 0}
        await self.client.publish(f"ioc/v1/d/{node.device_id}/birth", json.dumps(body), qos=1, retain=True)

    async def answer(self, node: Node, command_id: str, status: str, detail: Any = None) -> None:
        body: dict[str, Any] = {"v": 1, "ses": node.ses, "seq": node.seq, "ts": int(time.time() * 1000),
                                "id": command_id, "status": status}
        if detail is not None:
            body["detail"] = detail
        node.seq += 1
        await self.client.publish(f"ioc/v1/d/{node.device_id}/cmd/result", json.dumps(body), qos=1)

    async def _handle(self, node: Node, cmd: dict[str, Any]) -> None:
        node.commands.append(cmd)
        verdict = self.policy(node.device_id, cmd["name"], cmd["args"])
        if verdict is None:
            return
        if verdict == DOWNLOAD:
            args = cmd["args"]
            async with httpx.AsyncClient(timeout=10) as http:
                got = await http.get(args["url"])
            digest = hashlib.sha256(got.content).hexdigest()
            if got.status_code != 200:
                verdict = ("error", f"HTTP {got.status_code}")
            elif len(got.content) != args["bytes"] or digest != args["sha256"]:
                verdict = ("error", f"checksum mismatch: {len(got.content)} bytes, sha256 {digest}")
            else:
                node.downloaded.append((digest, len(got.content)))
                verdict = ("ok", {"bytes": len(got.content), "sha256": digest})
        await self.answer(node, cmd["id"], *verdict)

    async def listen(self) -> None:
        async for message in self.client.messages:
            node = self.nodes.get(str(message.topic).split("/")[3])
            if node is None or not isinstance(message.payload, bytes | bytearray):
                continue
            try:
                await self._handle(node, json.loads(message.payload))
            except Exception as err:  # shown by the test that reads `errors`
                self.errors.append(repr(err))


@asynccontextmanager
async def speakers(port: int, nodes: list[Node], policy: Policy = downloads) -> AsyncIterator[Speakers]:
    """The nodes online (births in and applied), answering their commands until the block ends."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"spk-{uuid.uuid4().hex[:8]}") as client:
        flock = Speakers(client, nodes, policy)
        for node in nodes:
            await client.subscribe(f"ioc/v1/d/{node.device_id}/cmd", qos=1)
            await flock.birth(node)
        listening = asyncio.create_task(flock.listen())
        try:
            for node in nodes:
                await wait_online(node.device_id)
            yield flock
        finally:
            assert not await stop_tasks([listening])  # aiomqtt can lose a cancellation (fleet/tasks.py)


async def wait_online(device_id: str, online: bool = True) -> None:
    async def there() -> bool:
        device = await Device.get_or_none(id=device_id)
        return device is not None and device.online is online and "speaker" in (device.roles or [])

    await async_wait_for(there, timeout=20, what=f"{device_id} online={online}")
