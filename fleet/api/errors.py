"""Error answers: short, and never a copy of what the caller sent.

FastAPI's default 422 repeats each bad value (`input`) back, so a 50 MB body came back as a 52 MB
answer. Here a validation error says where and what, in at most MAX_ERRORS entries.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

MAX_ERRORS = 20
MAX_LOCATION_PART = 64
MAX_MESSAGE = 200


class ErrorPublic(BaseModel):
    detail: str = Field(description="what went wrong, in one sentence")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="where: 'body', 'query', 'path' and the field's path")
    msg: str
    type: str


class ValidationErrorPublic(BaseModel):
    detail: list[ValidationIssue] | str = Field(
        description=f"the request's shape: the first {MAX_ERRORS} problems at most; a rule it broke: one sentence")


def _short(part: Any) -> str | int:
    if isinstance(part, int):
        return part
    text = str(part)
    return text if len(text) <= MAX_LOCATION_PART else text[: MAX_LOCATION_PART - 1] + "…"


def brief(error: dict[str, Any]) -> dict[str, Any]:
    message = str(error.get("msg", ""))
    return {"loc": [_short(part) for part in error.get("loc", ())],
            "msg": message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…",
            "type": str(error.get("type", ""))}


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": [brief(e) for e in exc.errors()[:MAX_ERRORS]]}, status_code=422)


# answers any operation can give; documented once for all of them
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "no login, or the token or session is not valid"},
    403: {"model": ErrorPublic,
          "description": "the role does not allow it, or a cross-site request carried the session cookie"},
    413: {"model": ErrorPublic, "description": "request body over FLEET_HTTP_BODY_MAX bytes"},
    422: {"model": ValidationErrorPublic,
          "description": "a bad parameter or body: not strict JSON, out of range, wrong type"},
}


def answer(description: str) -> dict[str, Any]:
    """An error status a route documents for itself (404, 409, 503, ...)."""
    return {"model": ErrorPublic, "description": description}


def _document_not_found(schema: dict[str, Any]) -> None:
    """Every operation with a path parameter can answer 404: the path names something that may not exist."""
    not_found = {"description": "no such thing (the path names something that does not exist)",
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                operation["responses"].setdefault("404", not_found)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_failed)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_not_found(generate())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
