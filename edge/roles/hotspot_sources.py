"""Where the hotspot role learns of stations: hostapd's control socket, or log lines.

- `HostapdControl`: hostapd's control interface, a UNIX datagram socket (e.g.
  `/var/run/hostapd/wlan0`). The client binds a socket of its own, sends `ATTACH` (answer `OK`)
  and then receives unsolicited events such as `<3>AP-STA-CONNECTED 02:11:22:33:44:55`. A `PING`
  (answer `PONG`) every `ping_s` tells a live hostapd from one that restarted (which forgets its
  attached clients): no answer within `timeout_s` is an error and the role attaches again.
- `LogLines`: lines of a file, followed as it grows (and reopened when rotated). Good for the
  lines an `hostapd_cli -a <script>` action script appends (`wlan0 AP-STA-CONNECTED <mac>`), a
  syslog file, or any access point's log, matched by configurable patterns.

Both return raw lines; `StationParser` turns a line into ("connected" | "disconnected", mac).
"""

import abc
import asyncio
import contextlib
import itertools
import os
import re
import socket
import time
from pathlib import Path
from typing import BinaryIO, Literal

from edge.errors import EdgeError
from edge.roles.hotspot_counter import normalise_mac

MAC_RE = r"(?P<mac>[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5})"
CONNECT_PATTERN = r"AP-STA-CONNECTED " + MAC_RE
DISCONNECT_PATTERN = r"AP-STA-DISCONNECTED " + MAC_RE
DATAGRAM_MAX = 4096
LINE_MAX = 4096  # longer lines are cut (a log line naming a station is far shorter)

Change = tuple[Literal["connected", "disconnected"], str]


class SourceError(EdgeError):
    """The station source cannot be used (no hostapd, no answer, unreadable log)."""


class StationParser:
    def __init__(self, connect: str = CONNECT_PATTERN, disconnect: str = DISCONNECT_PATTERN) -> None:
        self.connect = re.compile(connect)
        self.disconnect = re.compile(disconnect)

    def parse(self, line: str) -> Change | None:
        for kind, pattern in (("connected", self.connect), ("disconnected", self.disconnect)):
            found = pattern.search(line)
            if found:
                mac = normalise_mac(found.group("mac"))
                if mac is not None:
                    return kind, mac  # type: ignore[return-value]
        return None


class Source(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def lines(self, timeout: float) -> list[str]:
        """The lines that came within `timeout` seconds (maybe none); SourceError on failure."""

    @abc.abstractmethod
    def close(self) -> None: ...


_client_numbers = itertools.count()


class HostapdControl(Source):
    def __init__(
        self, ctrl_path: str, *, local_dir: str = "/tmp", ping_s: float = 10.0, timeout_s: float = 2.0
    ) -> None:
        self.ctrl_path = ctrl_path
        self.local_dir = local_dir
        self.ping_s = ping_s
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._local: str | None = None
        self._ping_sent: float | None = None
        self._next_ping = 0.0

    async def open(self) -> None:
        self.close()
        # named like wpa_ctrl's own client sockets; unique per process and attempt
        local = os.path.join(self.local_dir, f"ioc_hotspot_{os.getpid()}-{next(_client_numbers)}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)
            sock.bind(local)
            self._sock, self._local = sock, local
            sock.connect(self.ctrl_path)
            sock.setblocking(False)
            answer = await self._request(b"ATTACH")
        except OSError as err:
            self.close()
            raise SourceError(f"{self.ctrl_path}: {err.strerror or err}") from err
        if answer != "OK":
            self.close()
            raise SourceError(f"{self.ctrl_path}: ATTACH answered {answer!r}")
        self._ping_sent = None
        self._next_ping = time.monotonic() + self.ping_s

    async def _request(self, command: bytes) -> str:
        """Send a command and wait for its answer, skipping events that arrive meanwhile."""
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self._sock, command)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    data = await loop.sock_recv(self._sock, DATAGRAM_MAX)
            except TimeoutError:
                raise SourceError(f"{self.ctrl_path}: no answer to {command.decode()}") from None
            if not data.startswith(b"<"):
                return data.decode(errors="replace").strip()

    async def lines(self, timeout: float) -> list[str]:
        sock = self._sock
        if sock is None:
            raise SourceError(f"{self.ctrl_path}: not attached")
        now = time.monotonic()
        if self._ping_sent is not None and now - self._ping_sent > self.timeout_s:
            raise SourceError(f"{self.ctrl_path}: no PONG within {self.timeout_s} s (hostapd restarted?)")
        loop = asyncio.get_running_loop()
        try:
            if self._ping_sent is None and now >= self._next_ping:
                await loop.sock_sendall(sock, b"PING")
                self._ping_sent = now
            wait = min(timeout, self._next_ping - now if self._ping_sent is None else self.timeout_s)
            async with asyncio.timeout(max(0.01, wait)):
                data = await loop.sock_recv(sock, DATAGRAM_MAX)
        except TimeoutError:
            return []
        except OSError as err:
            raise SourceError(f"{self.ctrl_path}: {err.strerror or err}") from err
        text = data.decode(errors="replace").strip()
        if text == "PONG":
            self._ping_sent = None
            self._next_ping = time.monotonic() + self.ping_s
            return []
        if text.startswith("<"):
            return [text.partition(">")[2]]  # "<3>AP-STA-CONNECTED ..." -> "AP-STA-CONNECTED ..."
        return []

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.send(b"DETACH")
            self._sock.close()
            self._sock = None
        if self._local is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._local)
            self._local = None


class LogLines(Source):
    def __init__(self, path: str, *, from_start: bool = False, poll_s: float = 0.5) -> None:
        self.path = Path(path)
        self.from_start = from_start
        self.poll_s = poll_s
        self._file: BinaryIO | None = None
        self._inode: int | None = None
        self._partial = b""
        self._opened_once = False

    async def open(self) -> None:
        self.close()
        try:
            f = self.path.open("rb")
        except OSError as err:
            raise SourceError(f"{self.path}: {err.strerror or err}") from err
        if not (self.from_start and not self._opened_once):
            f.seek(0, os.SEEK_END)  # a restart does not count the old lines again
        self._opened_once = True
        self._file = f
        self._inode = os.fstat(f.fileno()).st_ino
        self._partial = b""

    async def lines(self, timeout: float) -> list[str]:
        f = self._file
        if f is None:
            raise SourceError(f"{self.path}: not open")
        data: bytes = f.read(64 * 1024)
        if not data:
            if self._rotated():
                await self._reopen_rotated()
                return []
            await asyncio.sleep(min(timeout, self.poll_s))
            return []
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()[-LINE_MAX:]
        return [c[:LINE_MAX].decode(errors="replace") for c in chunks if c.strip()]

    def _rotated(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return False  # between the rename and the new file: keep reading the old one
        return st.st_ino != self._inode or (self._file is not None and st.st_size < self._file.tell())

    async def _reopen_rotated(self) -> None:
        self.close()
        try:
            f = self.path.open("rb")  # a new file is read from its start
        except OSError as err:
            raise SourceError(f"{self.path}: {err.strerror or err}") from err
        self._file = f
        self._inode = os.fstat(f.fileno()).st_ino

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
