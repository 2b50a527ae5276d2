"""One child's prober: a check every `period_s` (TCP connect, ICMP where allowed, the stream's
judgement), birth when it becomes reachable, death `unreachable` after `down_after` failed checks
in a row, health at every check while it is reachable."""

import asyncio
import logging
import time
from typing import Any, Protocol

from edge.errors import EmitError
from edge.roles.base import RoleContext
from edge.roles.children.reach import ping, tcp_check
from edge.roles.children.settings import ChildSettings

log = logging.getLogger(__name__)

LOOK_S = 0.5  # the stream's frames are judged this often between checks


class Stream(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def look(self) -> None: ...
    def figures(self) -> Any: ...


def make_stream(child: ChildSettings) -> Stream | None:
    if child.rtsp_url is None:
        return None
    from edge.roles.children.stream import StreamWatch  # OpenCV: only for a child with a stream

    return StreamWatch(child.id, child.rtsp_url, frame_within_s=child.frame_within_s,
                       frozen_after_s=child.frozen_after_s, frozen_diff=child.frozen_diff,
                       open_timeout_s=max(1.0, min(child.frame_within_s, 30.0)))


class ChildWatch:
    def __init__(self, child: ChildSettings, context: RoleContext, *, icmp_ok: bool) -> None:
        self.child = child
        self.context = context
        self.icmp_ok = icmp_ok
        self.present: bool | None = None  # None until the first birth or death
        self.misses = 0
        self.checks = 0
        self.errors = 0
        self.stream_state: str | None = None
        self.stream = make_stream(child)

    async def run(self) -> None:
        if self.stream is not None:
            self.stream.start()
        try:
            while True:
                try:
                    await self.check()
                except EmitError as err:
                    self.errors += 1
                    log.warning("child %s: message not sent: %s", self.child.id, err)
                except Exception as err:  # one odd check never ends the watch: counted, logged, next period
                    self.errors += 1
                    log.error("child %s: check failed: %s: %.200s", self.child.id, type(err).__name__, err)
                deadline = time.monotonic() + self.child.period_s
                while (left := deadline - time.monotonic()) > 0:
                    await asyncio.sleep(min(LOOK_S, left))
                    if self.stream is not None:
                        self.stream.look()
        finally:
            if self.stream is not None:
                self.stream.stop()

    async def check(self) -> None:
        c = self.child
        self.checks += 1
        tcp = await tcp_check(c.host, c.ports, c.timeout_s)
        icmp_ms = await asyncio.to_thread(ping, c.host, c.timeout_s) if c.icmp and self.icmp_ok else None
        if tcp.open_ports or icmp_ms is not None:
            self.misses = 0
            if self.present is not True:
                self.present = True
                birth: dict[str, Any] = {"kind": c.kind}
                birth.update({k: v for k, v in (("fw", c.fw), ("hw", c.hw)) if v is not None})
                self.context.child(c.id, "birth", birth)
            self.context.child(c.id, "health", self.health_body(tcp.open_ports, tcp.connect_ms, icmp_ms))
            return
        self.misses += 1
        self.stream_state = None
        if self.present is not False and self.misses >= c.down_after:
            self.present = False
            self.context.child(c.id, "death", {"reason": "unreachable"})

    def health_body(self, open_ports: list[int], connect_ms: int | None, icmp_ms: int | None) -> dict[str, Any]:
        c = self.child
        body: dict[str, Any] = {"state": "ok", "open_ports": open_ports, "tcp_ms": connect_ms}
        if not c.icmp:
            body["icmp"] = "off"
        elif not self.icmp_ok:
            body["icmp"] = "unavailable"
        else:
            body["icmp"] = "ok" if icmp_ms is not None else "no_reply"
            body["icmp_ms"] = icmp_ms
        if self.stream is not None:
            figures = self.stream.figures()
            self.stream_state = figures.state
            body.update(figures.body())
            if figures.state != "live":
                body["state"] = figures.state  # no_frames or frozen
        return body
