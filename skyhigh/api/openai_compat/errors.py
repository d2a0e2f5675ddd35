"""OpenAI's error object, `{"error": {"message", "type", "param", "code"}}`, with the statuses
its SDKs map to exceptions (400 BadRequestError, 401 AuthenticationError, 413, 422, 503 ...).

skyhigh.api.errors renders its table in this shape under the OpenAI prefix; /events keeps its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import status
from fastapi.responses import JSONResponse

from skyhigh.domain.events import ErrorCode, EventError

# Codes a failed event can carry that mean "your audio" rather than "our server".
_CLIENT_CODES = frozenset(
    {
        ErrorCode.UNSUPPORTED_AUDIO,
        ErrorCode.EMPTY_AUDIO,
        ErrorCode.AUDIO_TOO_LONG,
        ErrorCode.INVALID_BASE64,
    }
)

# OpenAI's codes for the statuses the web layer raises itself (auth, routing, parsing).
_HTTP_CODES = {
    status.HTTP_401_UNAUTHORIZED: "invalid_api_key",
    status.HTTP_403_FORBIDDEN: "permission_denied",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_413_CONTENT_TOO_LARGE: "request_too_large",
    status.HTTP_429_TOO_MANY_REQUESTS: "rate_limit_exceeded",
}


class OpenAIError(Exception):
    """An answer in OpenAI's error shape, raised by the /v1 handlers.

    Usage::

        raise OpenAIError(400, "unknown model 'x'; use one of: whisper-1, base",
                          param="model", code="model_not_found")
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        kind = "server_error" if self.status_code >= 500 else "invalid_request_error"
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def from_validation(
    errors: Sequence[Mapping[str, Any]], *, total: int | None = None
) -> OpenAIError:
    """400 naming the first bad field as `param`; the message covers the problems given.

    Like /events, it never echoes the input (it may be an audio file); `total` (when more
    errors exist than are given) is stated as a count, so the message stays small.
    """
    params = [param_of(error.get("loc", ())) for error in errors]
    message = "; ".join(
        f"{param}: {error['msg']}" if param else str(error["msg"])
        for param, error in zip(params, errors, strict=True)
    )
    if total is not None and total > len(errors):
        message += f"; and {total - len(errors)} more errors"
    code = str(errors[0]["type"]) if errors else None
    return OpenAIError(status.HTTP_400_BAD_REQUEST, message, param=params[0], code=code)


def from_http(
    status_code: int, detail: Any, headers: Mapping[str, str] | None = None
) -> OpenAIError:
    message = detail if isinstance(detail, str) else str(detail)
    return OpenAIError(status_code, message, code=_HTTP_CODES.get(status_code), headers=headers)


def from_failed_event(error: EventError, *, event_id: str) -> OpenAIError:
    """A failed event: 400 when the audio was the problem, else 500; `X-Event-Id` names it."""
    headers = {"X-Event-Id": event_id}
    if error.code in _CLIENT_CODES:
        status_code = status.HTTP_400_BAD_REQUEST
    elif error.code == ErrorCode.AUDIO_TOO_LARGE:
        status_code = status.HTTP_413_CONTENT_TOO_LARGE
    else:
        return OpenAIError(
            status.HTTP_500_INTERNAL_SERVER_ERROR, error.message, code=error.code, headers=headers
        )
    return OpenAIError(status_code, error.message, param="file", code=error.code, headers=headers)


def param_of(loc: Sequence[Any]) -> str | None:
    """("body", "file") -> "file": OpenAI names the form field only."""
    fields = [str(part) for part in loc if part not in ("body", "query", "header")]
    return fields[-1] if fields else None
