"""Domain exceptions and validation errors mapped to HTTP, once for the whole app, as a table.

`ANSWERS` maps each domain exception to one `ErrorAnswer` (status, code, message, and whether
it is a field error); `render` gives it the shape of the face that was asked: `{"detail": ...}`
on /events (a field error as `[{"type", "loc", "msg"}]`), OpenAI's error object under `/v1`
(skyhigh.api.openai_compat.errors).

Validation errors never echo `input` (it may hold megabytes of base64 audio) and keep the
locations clients know: the event-type tag that pydantic's discriminated union adds to a
location is removed, and an unknown `event_type` is reported on `event_type` with the list of
supported types.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from skyhigh.api.openai_compat import PREFIX as OPENAI_PREFIX
from skyhigh.api.openai_compat import errors as openai_errors
from skyhigh.api.paths import under
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

# Validation errors rendered per answer; the rest are counted in one `too_many_errors` entry.
MAX_ERRORS_SHOWN = 10


@dataclass(frozen=True)
class ErrorAnswer:
    """How one exception is answered; the `openai_*` fields only where OpenAI's SDKs differ."""

    status: int
    code: str  # OpenAI's `code`; a field error's `type` on /events
    message: str
    loc: Sequence[Any] | None = None  # set: a field error (422 on /events, 400 under /v1)
    retry_after_s: int | None = None
    openai_status: int | None = None
    openai_message: str | None = None
    openai_param: str | None = None


def _conflict(exc: EventConflict) -> ErrorAnswer:
    event_id = exc.args[0]
    return ErrorAnswer(
        status.HTTP_409_CONFLICT,
        "idempotency_key_reused",
        f"event_id {event_id!r} was already used with a different body; "
        "use a new event_id for a new event",
        # 422 as the IETF Idempotency-Key draft says; the SDKs would retry a 409.
        openai_status=status.HTTP_422_UNPROCESSABLE_CONTENT,
        openai_message=f"Idempotency-Key {event_id!r} was already used for a different request "
        "(another file or other options); use a new key for a new request",
        openai_param="Idempotency-Key",
    )


def _invalid_input(exc: InvalidInput) -> ErrorAnswer:
    if exc.code == ErrorCode.AUDIO_TOO_LARGE:
        return ErrorAnswer(
            status.HTTP_413_CONTENT_TOO_LARGE,
            exc.code,
            exc.message,
            openai_param=openai_errors.param_of(exc.loc),
        )
    return ErrorAnswer(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.code, exc.message, loc=exc.loc)


def _retry_later(exc: QueueFull | QuotaExceeded, status_code: int, code: str) -> ErrorAnswer:
    return ErrorAnswer(status_code, code, str(exc), retry_after_s=exc.retry_after_s)


# The table: domain exception -> its answer. 503 (the server is busy) and 429 (the principal
# is over its quota) both carry Retry-After; a foreign event is a 404, never a 403.
ANSWERS: dict[type[Exception], Callable[[Any], ErrorAnswer]] = {
    QueueFull: lambda e: _retry_later(e, status.HTTP_503_SERVICE_UNAVAILABLE, "queue_full"),
    QuotaExceeded: lambda e: _retry_later(
        e, status.HTTP_429_TOO_MANY_REQUESTS, "rate_limit_exceeded"
    ),
    EventNotFound: lambda e: ErrorAnswer(
        status.HTTP_404_NOT_FOUND, "not_found", f"no event {e.args[0]!r}"
    ),
    Forbidden: lambda e: ErrorAnswer(status.HTTP_403_FORBIDDEN, "permission_denied", str(e)),
    EventConflict: _conflict,
    InvalidInput: _invalid_input,
    InvalidCursor: lambda _e: ErrorAnswer(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        "invalid_cursor",
        "cursor is not one this server issued; start without a cursor",
        loc=("query", "cursor"),
    ),
}


def render(answer: ErrorAnswer, *, openai: bool) -> JSONResponse:
    """The answer in the shape of the face that was asked."""
    headers = None if answer.retry_after_s is None else {"Retry-After": str(answer.retry_after_s)}
    if openai:
        field_error = answer.loc is not None
        return openai_errors.OpenAIError(
            answer.openai_status or (status.HTTP_400_BAD_REQUEST if field_error else answer.status),
            answer.openai_message or answer.message,
            param=answer.openai_param or (openai_errors.param_of(answer.loc or ())),
            code=answer.code,
            headers=headers,
        ).response()
    detail: Any = answer.message
    if answer.loc is not None:
        detail = [{"type": answer.code, "loc": list(answer.loc), "msg": answer.message}]
    return JSONResponse({"detail": detail}, status_code=answer.status, headers=headers)


def install_error_handlers(app: FastAPI, *, event_types: Collection[str]) -> None:
    """Register the table's answers, validation errors, HTTPException and OpenAIError."""

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        answer = next(ANSWERS[kind] for kind in type(exc).__mro__ if kind in ANSWERS)
        return render(answer(exc), openai=_openai(request))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Only the first few errors are rendered: the answer must not grow with the input.
        shown, total = list(exc.errors()[:MAX_ERRORS_SHOWN]), len(exc.errors())
        if _openai(request):
            return openai_errors.from_validation(shown, total=total).response()
        errors = [_client_error(error, event_types) for error in shown]
        if total > len(shown):
            errors.append(_more_errors(total - len(shown)))
        detail = jsonable_encoder(errors)
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    async def http_error(request: Request, exc: Exception) -> Response:
        # Auth (401), unknown routes (404), unparseable bodies (400) and the streaming body
        # limit (413) arrive as HTTPException; outside /v1 FastAPI's own shape.
        assert isinstance(exc, HTTPException)
        if _openai(request):
            return openai_errors.from_http(exc.status_code, exc.detail, exc.headers).response()
        return await http_exception_handler(request, exc)

    async def openai_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, openai_errors.OpenAIError)
        return exc.response()

    for kind in ANSWERS:
        app.add_exception_handler(kind, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(openai_errors.OpenAIError, openai_error)


def _openai(request: Request) -> bool:
    return under(request.url.path, OPENAI_PREFIX)


def _more_errors(count: int) -> dict[str, Any]:
    return {
        "type": "too_many_errors",
        "loc": ["body"],
        "msg": f"{count} more errors not shown; fix the ones above and send again",
    }


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
