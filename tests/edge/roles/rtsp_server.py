"""An RTSP server on loopback for the camera tests: ffmpeg serves the clip, we speak RTSP.

ffmpeg cannot itself answer an RTSP client's PLAY (its RTSP output is a client that pushes to a
server), so ffmpeg streams the clip as RTP to a local UDP port (`-re -stream_loop -1 -f rtp`,
with its SDP) and this small server answers OPTIONS / DESCRIBE / SETUP / PLAY / TEARDOWN with
that SDP, relaying the RTP packets to the client interleaved on its RTSP connection (RTP over
TCP; a request for UDP is answered 461, and the client falls back to TCP as cameras' clients do).
`stop()` kills ffmpeg and closes every connection: to the client, the camera went away.
"""

import socket
import subprocess
import threading
from pathlib import Path

from tests.support.mosquitto import free_port


class RtspServer:
    def __init__(self, clip: Path, workdir: Path, *, port: int | None = None) -> None:
        self.clip = clip
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self._ffmpeg: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self._rtp: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self._playing: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.sessions = 0

    def start(self) -> None:
        self._stopped.clear()
        self._rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._rtp.bind(("127.0.0.1", 0))
        rtp_port = self._rtp.getsockname()[1]
        sdp = self.workdir / "clip.sdp"
        sdp.unlink(missing_ok=True)
        self._ffmpeg = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(self.clip),
             "-an", "-c:v", "copy", "-f", "rtp", "-sdp_file", str(sdp), f"rtp://127.0.0.1:{rtp_port}"],
            stdin=subprocess.DEVNULL,
        )
        self._rtp.settimeout(10)
        self._rtp.recvfrom(65536)  # ffmpeg is streaming; its SDP file is written
        self._sdp = self._describe(sdp.read_text())
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True, name="rtsp-accept").start()
        threading.Thread(target=self._relay, args=(self._rtp,), daemon=True, name="rtsp-relay").start()

    def stop(self) -> None:
        self._stopped.set()
        if self._ffmpeg is not None:
            self._ffmpeg.kill()
            self._ffmpeg.wait(10)
        for sock in [self._listener, self._rtp, *self._clients]:
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        with self._lock:
            self._clients.clear()
            self._playing.clear()

    @staticmethod
    def _describe(sdp: str) -> str:
        lines = [line for line in sdp.splitlines() if line and not line.startswith("SDP:")]
        lines = [("c=IN IP4 0.0.0.0" if line.startswith("c=") else line) for line in lines]
        lines = [("m=video 0 RTP/AVP 96" if line.startswith("m=video") else line) for line in lines]
        lines.append("a=control:track0")
        return "\r\n".join(lines) + "\r\n"

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True, name="rtsp-client").start()

    def _relay(self, rtp: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                packet = rtp.recv(65536)
            except OSError:
                return
            frame = b"$\x00" + len(packet).to_bytes(2, "big") + packet
            with self._lock:
                playing = list(self._playing)
            for client in playing:
                try:
                    client.sendall(frame)
                except OSError:
                    with self._lock:
                        if client in self._playing:
                            self._playing.remove(client)

    def _serve(self, client: socket.socket) -> None:
        buffer = b""
        while not self._stopped.is_set():
            try:
                data = client.recv(4096)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\r\n\r\n" in buffer:
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                if head.startswith(b"$"):  # the client's own interleaved RTCP: not needed
                    continue
                self._answer(client, head.decode(errors="replace"))

    def _answer(self, client: socket.socket, request: str) -> None:
        lines = request.split("\r\n")
        method = lines[0].split(" ")[0]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        cseq = headers.get("cseq", "0")
        extra = ""
        body = ""
        status = "200 OK"
        if method == "OPTIONS":
            extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n"
        elif method == "DESCRIBE":
            body = self._sdp
            extra = f"Content-Base: {self.url}/\r\nContent-Type: application/sdp\r\n"
        elif method == "SETUP":
            if "TCP" not in headers.get("transport", ""):
                status = "461 Unsupported Transport"
            else:
                extra = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678\r\n"
        elif method == "PLAY":
            extra = "Session: 12345678\r\n"
            self.sessions += 1
        elif method != "TEARDOWN":
            status = "405 Method Not Allowed"
        reply = f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n{extra}Content-Length: {len(body.encode())}\r\n\r\n{body}"
        try:
            client.sendall(reply.encode())
        except OSError:
            return
        if method == "PLAY":
            with self._lock:
                self._playing.append(client)
