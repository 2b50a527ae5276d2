"""A peer that speaks hostapd's control-socket protocol (a UNIX datagram server), for tests.

It answers ATTACH/DETACH with OK, PING with PONG, anything else with UNKNOWN COMMAND, and sends
events ("<3>AP-STA-CONNECTED ...") to every attached client, as hostapd does.
"""

import contextlib
import os
import socket
import threading


class HostapdPeer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.attached: set[str] = set()
        self.commands: list[str] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self.path)
        sock.settimeout(0.1)
        self._sock = sock
        self.attached = set()
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="hostapd-peer", daemon=True)
        self._thread.start()

    def _serve(self, sock: socket.socket) -> None:
        while self._sock is sock:
            try:
                data, client = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            command = data.decode().strip()
            with self._lock:
                self.commands.append(command)
                if command == "ATTACH":
                    self.attached.add(client)
                    answer = b"OK\n"
                elif command == "DETACH":
                    self.attached.discard(client)
                    answer = b"OK\n"
                elif command == "PING":
                    answer = b"PONG\n"
                else:
                    answer = b"UNKNOWN COMMAND\n"
            with contextlib.suppress(OSError):
                sock.sendto(answer, client)

    def event(self, text: str, level: int = 3) -> None:
        assert self._sock is not None
        with self._lock:
            clients = list(self.attached)
        for client in clients:
            with contextlib.suppress(OSError):  # a client gone away, as hostapd tolerates
                self._sock.sendto(f"<{level}>{text}".encode(), client)

    def stop(self) -> None:
        """Like hostapd stopping: the socket goes, attached clients are forgotten."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
