"""The API's description: /openapi.json and Swagger UI at /docs, for logged-in people only.

Nothing about the API is secret, but nothing is told before a login either (as for devices:
fleet.api.deps.LOGGED_IN). Swagger UI is served from the fleet itself (the swagger-ui-py
package's copy), not from a CDN: the city's network may have no internet, and the
Content-Security-Policy allows scripts from the fleet's own origin only.
"""

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fleet.api.deps import LOGGED_IN
from fleet.web.pages import templates, viewer_of

router = APIRouter(include_in_schema=False)


def swagger_ui_dir() -> Path:
    """Swagger UI's files, from the swagger-ui-py distribution (not imported: only its files are used)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (it is a dependency of the fleet)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@router.get("/openapi.json", dependencies=[LOGGED_IN])
async def openapi(request: Request) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema


@router.get("/docs", response_class=HTMLResponse)
async def docs(request: Request) -> Response:
    if await viewer_of(request) is None:
        return RedirectResponse("/login", status_code=303)
    return templates.TemplateResponse(request, "docs.html", {})
