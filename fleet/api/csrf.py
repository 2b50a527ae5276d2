"""Refusal of cross-site state changes (docs/fleet.md, "Browser security").

A browser attaches the session cookie to a form another site submits; SameSite=Strict stops
that only across sites, not from another origin of the same site (another port or subdomain).
So a state-changing request that a browser could have sent on someone else's behalf must show
it came from the fleet's own origin:

- `Sec-Fetch-Site`, which browsers set and pages cannot forge, must be `same-origin`;
- a browser too old to send it must send an `Origin` whose host is this request's `Host`;
- neither header: refused (tools authenticate with `Authorization: Bearer`, not the cookie).

Checked: every POST/PUT/PATCH/DELETE that a session cookie authenticates (`refuse_cross_site`,
called where the API reads the cookie: a bearer token takes precedence and is never checked), and
every one outside /api/ (the pages' forms: log-in, login links; `CrossSiteGuard`), cookie or
not, so that nobody can be logged in as someone else either.
"""

from urllib.parse import urlsplit

from fastapi import HTTPException, Request, status
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSAL = ("cross-site request refused: a change made with the session cookie must come from the "
           "fleet's own pages; tools send 'Authorization: Bearer <token>'")


def sent_by_own_page(headers: Headers) -> bool:
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin, host = headers.get("origin"), headers.get("host")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def refuse_cross_site(request: Request) -> None:
    """For a request the session cookie authenticates: 403 unless it is safe or from the fleet's pages."""
    if request.method not in SAFE_METHODS and not sent_by_own_page(request.headers):
        raise HTTPException(status.HTTP_403_FORBIDDEN, REFUSAL)


class CrossSiteGuard:
    """The pages' forms (everything outside /api/) take state-changing requests from their own origin only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] not in SAFE_METHODS and not scope["path"].startswith("/api/")
                and not sent_by_own_page(Headers(scope=scope))):
            await JSONResponse({"detail": REFUSAL}, 403)(scope, receive, send)
            return
        await self.app(scope, receive, send)
