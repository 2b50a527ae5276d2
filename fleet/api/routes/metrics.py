"""`GET /metrics`: the fleet's figures for Prometheus (docs/ops.md, "Metrics").

Not a person's route, so no login and no Permission: Prometheus sends a bearer token
(FLEET_METRICS_TOKEN) or, with no token configured, scrapes from the fleet's own machine.
"""

import hashlib
import hmac
import ipaddress

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from pydantic import SecretStr

from fleet.api.deps import RuntimeDep
from fleet.api.errors import answer

METRICS_PATH = "/metrics"

router = APIRouter(tags=["service"])


def is_loopback(host: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (::ffff:127.0.0.1)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_access(request: Request, token: SecretStr | None) -> None:
    """With a token configured, the request must carry it (from anywhere, the fleet's machine too);
    without one, only a client on the fleet's own machine is answered."""
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # digests of equal length, compared in constant time: the time taken tells neither how much
        # of a guess was right nor the token's length
        expected = hashlib.sha256(token.get_secret_value().encode()).digest()
        offered = hashlib.sha256(given.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(offered, expected):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                                "send 'Authorization: Bearer <FLEET_METRICS_TOKEN>'",
                                headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return
    client = request.client.host if request.client else ""
    if not is_loopback(client):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "metrics are served to this machine only while FLEET_METRICS_TOKEN is unset")


@router.get(METRICS_PATH, response_class=Response, responses={
    200: {"description": "the Prometheus text format (version 0.0.4)",
          "content": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}}}},
    401: answer("FLEET_METRICS_TOKEN is set and the request does not carry it as a bearer token"),
    403: answer("FLEET_METRICS_TOKEN is unset and the client is not on the fleet's machine (127.0.0.0/8, ::1)"),
})
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Devices by kind, role, ward and state; the ingest's counters, queue and batch latency; open
    alerts; rollouts. The database figures are gathered at each scrape (docs/ops.md, "Metrics")."""
    check_access(request, runtime.settings.metrics_token)
    if runtime.metrics is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "metrics are not set up in this process")
    return Response(await runtime.metrics.scrape(), media_type=CONTENT_TYPE_PLAIN_0_0_4)
