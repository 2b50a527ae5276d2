"""The bounds every HTTP request meets before anything parses it (docs/fleet.md, "HTTP limits").

- a body over `body_max` bytes is refused with 413 as soon as that is known: from Content-Length
  before reading anything, or while reading a chunked body, never buffering more than the limit;
- a JSON body (Content-Type application/json or application/*+json: what FastAPI parses as JSON)
  must be JSON as the contract allows it (contract.strict_json: finite numbers, no lone
  surrogate or NUL in any string, at most 16 levels deep), else 422 in the validation shape;
- a NUL character in the path or the query string is refused with 422 (PostgreSQL cannot store it).

A few paths take large uploads (`large_bodies`: path -> its own limit, e.g. a release's tar;
`large_patterns`: a path pattern -> its limit, e.g. a device's snapshot upload):
their bodies are not buffered here but passed on as they arrive; a declared Content-Length over
the path's limit gets 413 at once, and the route counts a chunked body itself.
"""

import re
from collections.abc import Mapping, Sequence
from email.message import Message

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from contract import ContractError, strict_json


def invalid(location: str, message: str) -> JSONResponse:
    """A 422 in the shape of FastAPI's validation errors (docs: HTTPValidationError)."""
    return JSONResponse({"detail": [{"type": "value_error", "loc": [location], "msg": message}]}, 422)


def too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body over the limit of {limit} bytes"}, 413,
                        headers={"Connection": "close"})


def is_json(headers: Headers) -> bool:
    content_type = headers.get("content-type")
    if not content_type:  # FastAPI's strict_content_type (the default) does not parse it either
        return False
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class RequestGuard:
    def __init__(self, app: ASGIApp, *, body_max: int, large_bodies: Mapping[str, int] | None = None,
                 large_patterns: Sequence[tuple[re.Pattern[str], int]] = ()) -> None:
        self.app = app
        self.body_max = body_max
        self.large_bodies = dict(large_bodies or {})
        self.large_patterns = tuple(large_patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"].lower():
            await invalid("path" if "\x00" in scope["path"] else "query",
                          "NUL characters are not allowed")(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        large = self.large_bodies.get(scope["path"])
        if large is None:
            large = next((limit for pattern, limit in self.large_patterns if pattern.match(scope["path"])), None)
        if large is not None:
            if declared is not None and declared.isdigit() and int(declared) > large:
                await too_large(large)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if declared is not None and declared.isdigit() and int(declared) > self.body_max:
            await too_large(self.body_max)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body_max:
                await too_large(self.body_max)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and is_json(headers):
            try:
                strict_json.loads(body)
            except ContractError as err:
                await invalid("body", str(err))(scope, receive, send)
                return
        replayed = False

        async def replay() -> AsgiMessage:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: waits for the disconnect, as the server would

        await self.app(scope, replay, send)
