"""A small HTTP file server with `Range` support, for OTA downloads in tests (a stand-in for the
fleet's `GET /ota/files/<sha256>?t=<token>`).

    server = RangeServer()
    sha = server.add(data)                     # served at /ota/files/<sha>
    server.add(data, as_sha=sha_of_other)       # serve other bytes under a name (tampered, truncated)
    server.url                                  # "http://127.0.0.1:<port>/ota/files/{sha256}?t=test"
    server.rate = 200_000                       # bytes/s per response (so a cut lands mid-download)
    server.requests                             # [(sha, Range header or None), ...]
    server.close()
"""

import hashlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATH = re.compile(r"^/ota/files/([0-9a-f]{64})(\?.*)?$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_BLOCK = 16 << 10


class RangeServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.rate: float | None = None  # bytes per second per response; None: as fast as possible
        self.cut_after: dict[str, int] = {}  # sha -> close the connection after this many body bytes, once
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # the http.server API
                server._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="range-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ota/files/{{sha256}}?t=test"

    def add(self, data: bytes, *, as_sha: str | None = None) -> str:
        sha = as_sha or hashlib.sha256(data).hexdigest()
        with self._lock:
            self.files[sha] = data
        return sha

    def requested(self, sha: str) -> list[str | None]:
        with self._lock:
            return [rng for s, rng in self.requests if s == sha]

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        found = _PATH.match(handler.path)
        rng = handler.headers.get("Range")
        with self._lock:
            data = self.files.get(found[1]) if found else None
            if found:
                self.requests.append((found[1], rng))
            cut = self.cut_after.pop(found[1], None) if found else None
        if data is None:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        start, end = 0, len(data) - 1
        status = 200
        if rng:
            parsed = _RANGE.match(rng.strip())
            if parsed is None or int(parsed[1]) >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            start = int(parsed[1])
            end = min(int(parsed[2]), end) if parsed[2] else end
            status = 206
        handler.send_response(status)
        handler.send_header("Content-Length", str(end + 1 - start))
        handler.send_header("Accept-Ranges", "bytes")
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        handler.end_headers()
        pos = start
        sent = 0
        try:
            while pos <= end:
                block = data[pos:min(pos + _BLOCK, end + 1)]
                if cut is not None and sent + len(block) > cut:
                    handler.wfile.write(block[:max(0, cut - sent)])
                    handler.wfile.flush()
                    handler.close_connection = True
                    return
                handler.wfile.write(block)
                pos += len(block)
                sent += len(block)
                if self.rate:
                    time.sleep(len(block) / self.rate)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
