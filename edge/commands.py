"""Commands from the fleet: check, de-duplicate, run one at a time, answer through the queue.

Every command received is answered with a `cmd/result` (see docs/protocol.md):
- `expired` when its `exp` has passed (checked on arrival and again just before it runs);
- `unknown` when no handler has its name;
- `error` when it is malformed, when the handler fails, or when the backlog is full (`busy`);
- `ok` otherwise, with the handler's detail.

The results of the last `MEMORY` commands are kept in the state folder, so a command the broker
delivers again, even after a restart (e.g. after `reboot`), is answered with its first result
instead of being run twice.
"""

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import ContractError, parse_downstream
from edge.errors import CommandError
from edge.statefile import StateDisk, read_json
from edge.uplink import Uplink

log = logging.getLogger(__name__)

# Results remembered for re-answering duplicates (the contract asks for at least 16).
MEMORY = 64
# Commands accepted and waiting for the one before them to finish. At the bound a new command
# is answered `error` / `busy` at once, and the fleet may send it again later.
BACKLOG = 32
# A handler that takes longer is abandoned and its command answered `error`.
HANDLER_TIMEOUT_S = 30.0

Detail = Mapping[str, Any] | str | None


@dataclass(frozen=True, slots=True)
class Reply:
    """What a handler returns: the result's detail, and an action to take once it is queued."""

    detail: Detail = None
    after: Callable[[], None] | None = None


CommandHandler = Callable[[Mapping[str, Any]], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class _Accepted:
    command_id: str
    name: str
    args: Mapping[str, Any]
    expires_ms: int


class CommandDesk:
    def __init__(
        self,
        uplink: Uplink,
        memory_path: Path,
        handlers: Mapping[str, CommandHandler],
        *,
        disk: StateDisk | None = None,
    ) -> None:
        self.uplink = uplink
        self.memory_path = memory_path
        # A full disk must not stop the commands: the results stay in memory and are written
        # with the next save that succeeds.
        self.disk = disk if disk is not None else StateDisk(memory_path.parent, reserve_bytes=0)
        self.handlers = dict(handlers)
        self.executed = 0
        saved = read_json(memory_path, [], if_corrupt=[])
        # id -> (status, detail); None while the command waits or runs.
        self._memory: OrderedDict[str, tuple[str, Detail] | None] = OrderedDict(
            (item["id"], (item["status"], item.get("detail")))
            for item in (saved if isinstance(saved, list) else [])
            if isinstance(item, dict)
            and isinstance(item.get("id"), str)
            and isinstance(item.get("status"), str)
        )
        self._backlog: asyncio.Queue[_Accepted] = asyncio.Queue(maxsize=BACKLOG)

    def receive(self, payload: bytes) -> None:
        """Handle a `cmd` message as it arrives; the handler itself runs later, in `run`."""
        try:
            body = parse_downstream("cmd", payload)
        except (ContractError, ValueError) as err:
            self._refuse_malformed(payload, err)
            return
        command_id: str = body["id"]
        if command_id in self._memory:
            earlier = self._memory[command_id]
            if earlier is None:
                log.info("command %s delivered again while it is pending; ignored", command_id)
            else:
                log.info("command %s delivered again; answering with its earlier result", command_id)
                self.uplink.command_result(command_id, earlier[0], earlier[1])
            return
        accepted = _Accepted(command_id, body["name"], body["args"], body["exp"])
        if self._expired(accepted):
            self._finish(command_id, "expired", None)
        elif accepted.name not in self.handlers:
            self._finish(command_id, "unknown", {"name": accepted.name})
        else:
            try:
                self._backlog.put_nowait(accepted)
            except asyncio.QueueFull:
                self.uplink.command_result(command_id, "error", "busy")
                return
            self._remember(command_id, None)

    async def run(self) -> None:
        """Run accepted commands one after the other, until cancelled."""
        while True:
            accepted = await self._backlog.get()
            await self._execute(accepted)

    async def _execute(self, accepted: _Accepted) -> None:
        if self._expired(accepted):
            self._finish(accepted.command_id, "expired", None)
            return
        handler = self.handlers[accepted.name]
        try:
            async with asyncio.timeout(HANDLER_TIMEOUT_S):
                reply = await handler(accepted.args)
        except CommandError as err:
            self._finish(accepted.command_id, "error", str(err)[:200])
            return
        except TimeoutError:
            self._finish(accepted.command_id, "error", f"timed out after {HANDLER_TIMEOUT_S:g} s")
            return
        except Exception:  # a role's handler is third-party code: answer, log, carry on
            log.exception("command %s (%s) failed", accepted.command_id, accepted.name)
            self._finish(accepted.command_id, "error", "internal error; see the device log")
            return
        self.executed += 1
        self._finish(accepted.command_id, "ok", reply.detail)
        if reply.after is not None:
            reply.after()

    def _expired(self, accepted: _Accepted) -> bool:
        now = self.uplink.stamper.now_ms()
        # With the clock unknown there is no telling; the command runs.
        return now is not None and now > accepted.expires_ms

    def _finish(self, command_id: str, status: str, detail: Detail) -> None:
        if isinstance(detail, Mapping):
            detail = dict(detail)
        self._remember(command_id, (status, detail))
        self._save()
        self.uplink.command_result(command_id, status, detail)

    def _remember(self, command_id: str, result: tuple[str, Detail] | None) -> None:
        self._memory[command_id] = result
        self._memory.move_to_end(command_id)
        while len(self._memory) > MEMORY:
            self._memory.popitem(last=False)

    def _save(self) -> None:
        self.disk.save_json(
            self.memory_path,
            [
                {"id": cid, "status": result[0], "detail": result[1]}
                for cid, result in self._memory.items()
                if result is not None
            ],
        )

    def _refuse_malformed(self, payload: bytes, err: Exception) -> None:
        """Answer a malformed command if it has a usable id; otherwise it can only be logged."""
        try:
            command_id = json.loads(payload).get("id")
        except (ValueError, AttributeError):
            command_id = None
        if isinstance(command_id, str) and 0 < len(command_id) <= 64:
            self.uplink.command_result(command_id, "error", f"malformed command: {err}"[:200])
        else:
            log.warning("dropped a malformed command without a usable id: %s", err)
