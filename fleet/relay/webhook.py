"""The webhook transport (docs/relay.md, "Webhooks: Standard Webhooks"): one POST per attempt with
aiohttp (about a sixth of httpx's CPU per request: the relay sends thousands a second at most, in
the process that also ingests), redirects not followed (a 3xx is a failure), the endpoint's
`timeout_s` for the whole attempt, at most RESPONSE_MAX bytes of the answer read (kept, shortened,
as the last error)."""

import asyncio
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from fleet import __version__
from fleet.ops.transports import scrub
from fleet.relay.models import RelayEndpoint
from fleet.relay.transport import Message, Outcome

RESPONSE_MAX = 4096  # bytes of an answer read
ERROR_MAX = 300  # the delivery's last_error column


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from now: a number of seconds or an HTTP date (None: neither)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


class WebhookTransport:
    """One connection pool for all endpoints (no proxy from the environment, keep-alive), made at
    the first send (an aiohttp session belongs to the running event loop)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0), trust_env=False,
                auto_decompress=False, skip_auto_headers=("Accept-Encoding",))
        return self._session

    async def send(self, endpoint: RelayEndpoint, message: Message) -> Outcome:
        host = urlsplit(endpoint.url).hostname or "?"
        headers = {**message.headers, "content-type": "application/json",
                   "user-agent": f"ioc-fleet-relay/{__version__}"}
        try:
            async with asyncio.timeout(endpoint.timeout_s):
                async with self._client().post(endpoint.url, data=message.body, headers=headers,
                                               allow_redirects=False) as answer:
                    read = b""
                    while len(read) < RESPONSE_MAX:
                        chunk = await answer.content.read(RESPONSE_MAX - len(read))
                        if not chunk:
                            break
                        read += chunk
                    status = answer.status
                    retry_after = answer.headers.get("retry-after")
        except TimeoutError:
            return Outcome(ok=False, error=f"no answer from {host} within {endpoint.timeout_s:g} s")
        except (aiohttp.ClientError, ValueError) as err:  # refused, reset, malformed answer, bad URL
            detail = str(err) or type(err).__name__
            return Outcome(ok=False, error=scrub(f"{host}: {type(err).__name__}: {detail}", endpoint.url)[:ERROR_MAX])
        if 200 <= status < 300:
            return Outcome(ok=True, status=status)
        text = read[:RESPONSE_MAX].decode("utf-8", "replace").replace("\r", " ").replace("\n", " ").strip()
        error = f"HTTP {status} from {host}" + (f": {text}" if text else "")
        return Outcome(ok=False, status=status, error=error[:ERROR_MAX],
                       retry_after_s=retry_after_s(retry_after, datetime.now(UTC)))

    async def forget(self, endpoint_id: int) -> None:
        """Nothing held per endpoint (the pool's idle connections expire by themselves)."""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
