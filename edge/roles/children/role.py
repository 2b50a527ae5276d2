"""`children`: a Pi speaks for third-party devices near it (IP cameras, conference endpoints) that
run none of our code, on `child/{child_id}/{birth,death,health}` (docs/protocol.md), and proposes
the ONVIF devices that answer a WS-Discovery probe on its LAN (event `child_proposed`).

The children watched are the config's `[[roles.children.children]]` and the desired state's
`doc.children.children` (what an operator adopted in the fleet); together at most MAX_CHILDREN,
MAX_STREAMS of them with an RTSP stream. One prober task per child (edge/roles/children/watch.py);
a change of the desired state stops the probers of children removed or changed and starts the new.

Health (`roles.children`): `children`, `present`, `absent`, `frozen`, `no_frames`, `icmp_available`
(0/1), `probes`, `proposals`, `probe_errors`. Command `children.discover`: one probe now, answers
the devices found (at most `max_found`) without proposing them.
"""

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from edge.commands import CommandHandler, Reply
from edge.errors import CommandError, DesiredStateError, EmitError
from edge.roles.base import Number, Role, RoleContext
from edge.roles.children.discovery import Found, probe
from edge.roles.children.reach import icmp_available
from edge.roles.children.settings import MAX_CHILDREN, ChildrenSettings, ChildSettings, check_children
from edge.roles.children.watch import ChildWatch

PROPOSED_KEEP = 256  # endpoint addresses remembered as proposed (oldest forgotten first): one event each


class ChildrenRole(Role):
    def __init__(self, settings: ChildrenSettings, context: RoleContext) -> None:
        super().__init__(context)
        self.settings = settings
        self.adopted: list[ChildSettings] = []
        self.watches: dict[str, tuple[ChildWatch, asyncio.Task[None]]] = {}
        self.icmp_ok = icmp_available()
        self._changed = asyncio.Event()
        self.proposed: dict[str, None] = {}  # insertion-ordered set of endpoint addresses
        self.probes = self.proposals = self.probe_errors = 0

    def wanted(self) -> list[ChildSettings]:
        return [*self.settings.children, *self.adopted]

    # -- desired state: doc.children.children ------------------------------------------------

    def _parse(self, doc: Mapping[str, Any]) -> list[ChildSettings]:
        part = doc.get("children", {})
        items = part.get("children", []) if isinstance(part, dict) else None
        if not isinstance(items, list):
            raise DesiredStateError("children: doc.children.children must be a list")
        adopted = []
        for index, item in enumerate(items[:MAX_CHILDREN + 1]):
            try:
                adopted.append(ChildSettings.model_validate(item))
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in (index, *first["loc"]))
                raise DesiredStateError(f"children.{where}: {first['msg']}"[:200]) from None
        try:
            check_children([*self.settings.children, *adopted])
        except ValueError as err:
            raise DesiredStateError(f"children: {err}"[:200]) from None
        return adopted

    def check_desired(self, doc: Mapping[str, Any]) -> None:
        self._parse(doc)

    def apply_desired(self, doc: Mapping[str, Any]) -> None:
        self.adopted = self._parse(doc)
        self._changed.set()

    # -- the probers ---------------------------------------------------------------------------

    async def run(self) -> None:
        discovery = None
        if self.settings.discovery is not None:
            discovery = asyncio.create_task(self._discover_loop(), name=f"children-discovery-{self.context.device_id}")
        try:
            while True:
                self._changed.clear()
                self._reconcile()
                await self._changed.wait()
        finally:
            tasks = [task for _, task in self.watches.values()]
            if discovery is not None:
                tasks.append(discovery)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.watches.clear()

    def _reconcile(self) -> None:
        wanted = {c.id: c for c in self.wanted()}
        for child_id, (watch, task) in list(self.watches.items()):
            if wanted.get(child_id) != watch.child:
                task.cancel()
                del self.watches[child_id]
        for child_id, child in wanted.items():
            if child_id not in self.watches:
                watch = ChildWatch(child, self.context, icmp_ok=self.icmp_ok)
                task = asyncio.create_task(watch.run(), name=f"child-{child_id}")
                self.watches[child_id] = (watch, task)

    # -- discovery -----------------------------------------------------------------------------

    async def _probe(self) -> list[Found]:
        d = self.settings.discovery
        assert d is not None
        self.probes += 1
        try:
            result = await asyncio.to_thread(probe, d.address(), wait_s=d.wait_s, max_found=d.max_found,
                                             types=d.types)
        except Exception as err:  # a socket error, an answer the parser chokes on: counted, next probe
            self.probe_errors += 1
            self.context.log.warning("children: WS-Discovery probe failed: %s: %.200s", type(err).__name__, err)
            return []
        self.probe_errors += result.unreadable
        return result.found

    async def _discover_loop(self) -> None:
        d = self.settings.discovery
        assert d is not None
        while True:
            for found in await self._probe():
                self.propose(found)
            await asyncio.sleep(d.every_s)

    def propose(self, found: Found) -> None:
        """An event `child_proposed` for a device not watched and not proposed before (this run)."""
        watched_hosts = {c.host for c in self.wanted()}
        if found.address in self.proposed or found.host in watched_hosts:
            return
        self.proposed[found.address] = None
        while len(self.proposed) > PROPOSED_KEEP:
            del self.proposed[next(iter(self.proposed))]
        digest = hashlib.sha256(found.address.encode()).hexdigest()[:16]
        data = {"address": found.address, "host": found.host, "xaddrs": found.xaddrs, "types": found.types,
                "scopes": found.scopes, "kind": "ip_camera" if "NetworkVideoTransmitter" in found.types else "other"}
        try:
            self.context.event(event_id=f"child-proposed-{digest}", event_type="child_proposed", phase="once",
                               category="other", data=data)
            self.proposals += 1
        except EmitError as err:
            self.probe_errors += 1
            self.context.log.warning("children: proposal not sent: %s", err)

    # -- health and commands ---------------------------------------------------------------------

    def health(self) -> dict[str, Number]:
        watches = [w for w, _ in self.watches.values()]
        return {
            "children": len(watches),
            "present": sum(w.present is True for w in watches),
            "absent": sum(w.present is False for w in watches),
            "frozen": sum(w.stream_state == "frozen" for w in watches),
            "no_frames": sum(w.stream_state == "no_frames" for w in watches),
            "icmp_available": int(self.icmp_ok),
            "probes": self.probes,
            "proposals": self.proposals,
            "probe_errors": self.probe_errors,
        }

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"discover": self._discover}

    async def _discover(self, args: Mapping[str, Any]) -> Reply:
        if self.settings.discovery is None:
            raise CommandError("no [roles.children.discovery] in this Pi's config")
        found = await self._probe()
        return Reply({"found": [{"address": f.address, "host": f.host, "xaddrs": f.xaddrs} for f in found[:16]]})
