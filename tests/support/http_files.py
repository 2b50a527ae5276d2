"""A small HTTP file server for the OTA tests: `GET /ota/files/<sha256>?t=...` with `Range: bytes=N-`,
as the fleet's download route answers (200 or 206 with Content-Range, 404 for an unknown file).

Fault injection for the device's side: `files` maps a SHA-256 to the bytes served for it (a test
may serve other bytes than the signed ones: tampered, truncated); `rate` throttles each response to
about that many bytes a second (so a power cut lands in the middle of a download); `cut_after`
closes the first response of a file after that many bytes (an interrupted download)."""

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATH = re.compile(r"/ota/files/([0-9a-f]{64})(\?.*)?")
_RANGE = re.compile(r"bytes=(\d+)-$")


class FileServer:
    """Serves `files` on 127.0.0.1 on a free port from a thread; `url` is the offer's URL template."""

    def __init__(self, files: dict[str, bytes] | None = None, *, rate: int | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.rate = rate
        self.cut_after: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []  # (sha256, Range header)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._get(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/ota/files/{{sha256}}?t=test-token"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http-files", daemon=True)
        self._thread.start()

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        found = _PATH.fullmatch(handler.path)
        data = self.files.get(found.group(1)) if found else None
        sha = found.group(1) if found else ""
        asked = handler.headers.get("Range")
        with self._lock:
            self.requests.append((sha, asked))
            cut = self.cut_after.pop(sha, None)
        if data is None:
            handler.send_error(404)
            return
        start = 0
        ranged = _RANGE.match(asked or "")
        if ranged and int(ranged.group(1)) < len(data):
            start = int(ranged.group(1))
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        elif ranged:
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(data)}")
            handler.end_headers()
            return
        else:
            handler.send_response(200)
        body = data[start:]
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if cut is not None:
            body = body[:cut]
        try:
            if self.rate:
                chunk = max(256, self.rate // 50)
                for pos in range(0, len(body), chunk):
                    handler.wfile.write(body[pos:pos + chunk])
                    handler.wfile.flush()
                    threading.Event().wait(chunk / self.rate)
            else:
                handler.wfile.write(body)
        except OSError:
            pass  # the device went away (a power cut)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
