"""Domain exceptions and validation errors mapped to HTTP, once for the whole app.

Validation errors never echo `input` (it may hold megabytes of base64 audio) and keep the
locations clients know: the event-type tag that pydantic's discriminated union adds to a
location is removed, and an unknown `event_type` is reported on `event_type` with the list of
supported types.

Requests under the OpenAI-compatible prefix (`/v1`) get OpenAI's error object instead
(skyhigh.api.openai_compat.errors), from the same handlers, so both faces map each exception once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from skyhigh.api import openai_compat
from skyhigh.api.openai_compat import errors as openai_errors
from skyhigh.domain.echo import shown
from skyhigh.domain.errors import (
    EventConflict,
    EventNotFound,
    InvalidCursor,
    InvalidInput,
    QueueFull,
    QuotaExceeded,
)
from skyhigh.domain.events import ErrorCode
from skyhigh.domain.tenancy import Forbidden


def install_error_handlers(app: FastAPI, *, event_types: Collection[str]) -> None:
    """Register every mapping from a domain exception to an HTTP answer."""

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Only the first few errors are rendered: the answer must not grow with the input.
        shown, total = list(exc.errors()[:MAX_ERRORS_SHOWN]), len(exc.errors())
        if _openai(request):
            return openai_errors.from_validation(shown, total=total).response()
        errors = [_client_error(error, event_types) for error in shown]
        if total > len(shown):
            errors.append(_more_errors(total - len(shown)))
        return _answer(status.HTTP_422_UNPROCESSABLE_CONTENT, jsonable_encoder(errors))

    async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidInput)
        if _openai(request):
            return openai_errors.from_invalid_input(exc).response()
        if exc.code == ErrorCode.AUDIO_TOO_LARGE:
            return _answer(status.HTTP_413_CONTENT_TOO_LARGE, exc.message)
        error = {"type": exc.code, "loc": list(exc.loc), "msg": exc.message}
        return _answer(status.HTTP_422_UNPROCESSABLE_CONTENT, [error])

    async def queue_full(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QueueFull)
        if _openai(request):
            return openai_errors.from_queue_full(exc).response()
        headers = {"Retry-After": str(exc.retry_after_s)}
        return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers=headers)

    async def conflict(request: Request, exc: Exception) -> JSONResponse:
        if _openai(request):
            return openai_errors.from_conflict(exc.args[0]).response()
        detail = (
            f"event_id {exc.args[0]!r} was already used with a different body; "
            "use a new event_id for a new event"
        )
        return _answer(status.HTTP_409_CONFLICT, detail)

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        if _openai(request):
            return openai_errors.from_not_found(exc.args[0]).response()
        return _answer(status.HTTP_404_NOT_FOUND, f"no event {exc.args[0]!r}")

    async def forbidden(request: Request, exc: Exception) -> JSONResponse:
        # Only for what the principal may not do at all; a foreign event is a 404 instead.
        if _openai(request):
            return openai_errors.from_http(status.HTTP_403_FORBIDDEN, str(exc)).response()
        return _answer(status.HTTP_403_FORBIDDEN, str(exc))

    async def quota_exceeded(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QuotaExceeded)
        headers = {"Retry-After": str(exc.retry_after_s)}
        if _openai(request):
            return openai_errors.from_http(
                status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers
            ).response()
        return _answer(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers=headers)

    async def invalid_cursor(_request: Request, _exc: Exception) -> JSONResponse:
        error = {
            "type": "invalid_cursor",
            "loc": ["query", "cursor"],
            "msg": "cursor is not one this server issued; start without a cursor",
        }
        return _answer(status.HTTP_422_UNPROCESSABLE_CONTENT, [error])

    async def http_error(request: Request, exc: Exception) -> Response:
        # Auth (401), unknown routes (404), unparseable bodies (400) and the streaming body
        # limit (413) arrive as HTTPException; outside /v1 FastAPI's own rendering stays.
        assert isinstance(exc, HTTPException)
        if _openai(request):
            return openai_errors.from_http(exc.status_code, exc.detail, exc.headers).response()
        return await http_exception_handler(request, exc)

    async def openai_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, openai_errors.OpenAIError)
        return exc.response()

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(openai_errors.OpenAIError, openai_error)
    app.add_exception_handler(InvalidInput, invalid_input)
    app.add_exception_handler(QueueFull, queue_full)
    app.add_exception_handler(EventConflict, conflict)
    app.add_exception_handler(EventNotFound, not_found)
    app.add_exception_handler(InvalidCursor, invalid_cursor)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(QuotaExceeded, quota_exceeded)


# Validation errors rendered per answer; the rest are counted in one `too_many_errors` entry.
MAX_ERRORS_SHOWN = 10


def _more_errors(count: int) -> dict[str, Any]:
    return {
        "type": "too_many_errors",
        "loc": ["body"],
        "msg": f"{count} more errors not shown; fix the ones above and send again",
    }


def _openai(request: Request) -> bool:
    path: str = request.url.path
    return path == openai_compat.PREFIX or path.startswith(openai_compat.PREFIX + "/")


def _answer(
    status_code: int, detail: Any, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _client_error(error: dict[str, Any], event_types: Collection[str]) -> dict[str, Any]:
    loc: Sequence[Any] = error.get("loc", ())
    if error["type"] == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        return {
            "type": "unknown_event_type",
            "loc": [*loc, "event_type"],
            "msg": f"unknown event_type {shown(tag)}; supported types: {', '.join(event_types)}",
        }
    if error["type"] == "union_tag_not_found":
        return {"type": "missing", "loc": [*loc, "event_type"], "msg": "Field required"}
    if len(loc) >= 2 and loc[0] == "body" and loc[1] in event_types:
        loc = [loc[0], *loc[2:]]  # the discriminated union's tag, not a field of the body
    return {"type": error["type"], "loc": list(loc), "msg": error["msg"]}
