"""The device's HTTP(S) requests to the fleet (`[fleet] url`): standard library only, so a Pi never
installs an HTTP stack for them.

The device logs in as itself with HTTP Basic: user = its device id, password = its broker password
(the fleet checks the same credential as the broker does). Redirects are not followed (an answer
is what the fleet said at that address), and no proxy from the environment is used.
"""

import base64
import email.utils
import http.client
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from edge.config import FleetSettings
from edge.errors import EdgeError
from edge.tls import verifying_context

ANSWER_READ_MAX = 4096  # bytes of an answer's body kept (for a log line)


class FleetUnreachable(EdgeError):
    """No answer from the fleet: no route, refused, TLS refused, timed out, cut mid-answer."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # at most ANSWER_READ_MAX bytes
    retry_after_s: float | None = None  # the answer's Retry-After (seconds or an HTTP date), if any


def fleet_tls_context(fleet: FleetSettings) -> ssl.SSLContext | None:
    """For an https:// fleet: its certificate must chain to `ca_file` (only that file; the system's
    CAs when it is not set) and name the URL's host, as for the broker (edge.link.tls_context)."""
    if not fleet.tls:
        return None
    return verifying_context(fleet.ca_file, "fleet.ca_file")


class FleetHttp:
    """Blocking requests to the fleet as the device; call from a worker thread, never the event loop."""

    def __init__(self, settings: FleetSettings, device_id: str, password: str) -> None:
        self.settings = settings
        self.device_id = device_id
        parts = urlsplit(settings.url)
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if settings.tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._tls = fleet_tls_context(settings)
        token = base64.b64encode(f"{device_id}:{password}".encode()).decode()
        self._authorization = f"Basic {token}"

    def path(self, *segments: str) -> str:
        """The URL path under the fleet's own path prefix, each segment escaped."""
        return self._prefix + "".join("/" + quote(segment, safe="") for segment in segments)

    def put(self, path: str, body: bytes, content_type: str) -> Answer:
        """PUT `body` at `path` (from `path()`); FleetUnreachable when no HTTP answer came."""
        timeout = self.settings.timeout_s
        connection: http.client.HTTPConnection
        if self._tls is not None:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._tls)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            connection.request("PUT", path, body=body, headers={
                "Authorization": self._authorization,
                "Content-Type": content_type,
                "Content-Length": str(len(body)),
            })
            response = connection.getresponse()
            return Answer(response.status, response.read(ANSWER_READ_MAX),
                          retry_after(response.getheader("Retry-After")))
        except (OSError, http.client.HTTPException) as err:  # ssl.SSLError and timeouts are OSErrors
            raise FleetUnreachable(f"{type(err).__name__}: {err}"[:200]) from err
        finally:
            connection.close()


def retry_after(value: str | None) -> float | None:
    """A `Retry-After` header in seconds from now (delta-seconds or an HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
